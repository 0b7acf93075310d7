"""Shared makings for the serving tests."""

from __future__ import annotations


def gate(store, digest: str, env: str) -> None:
    """Run ``env``'s built-in gate set on a package (in this process) so that ``env`` admits it; fail if not."""
    from factory.gates import admit, run_gate

    run_gate(store, digest, env, parallel=False)
    decision = admit(store, digest, env)
    assert decision.allowed, decision.explain()


def admit_as_dev(store, env: str, *digests: str) -> None:
    """Make ``env`` require what dev does (contract and security), then gate ``digests`` so that ``env`` admits them.

    For tests about rollouts in prod whose packages have no datasets for the quality,
    fairness and drift gates.
    """
    from factory.gates import admit, set_environment
    from factory.gates.admission import DEFAULT_ENVIRONMENTS

    policy = DEFAULT_ENVIRONMENTS["dev"].model_copy(update={"name": env})
    set_environment(store, policy, reason=f"tests: {env} requires what dev does")
    for digest in digests:
        gate(store, digest, "dev")
        decision = admit(store, digest, env)
        assert decision.allowed, decision.explain()
