"""Shared makings for the serving tests."""

from __future__ import annotations


def gate(store, digest: str, env: str) -> None:
    """Run ``env``'s built-in gate set on a package (in this process) so that ``env`` admits it; fail if not."""
    from factory.gates import admit, run_gate

    run_gate(store, digest, env, parallel=False)
    decision = admit(store, digest, env)
    assert decision.allowed, decision.explain()
