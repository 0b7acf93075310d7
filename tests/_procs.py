"""Run a function in several spawned processes at once and collect what each reports."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence

__all__ = ["run_together"]


def run_together(target: Callable, args: Sequence[tuple], *, timeout_s: float = 120.0) -> list:
    """Start ``target(*a, out)`` for each ``a`` in ``args``; the values they put on ``out``
    (in the order they came), once every process has exited with status 0."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, out)) for a in args]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=timeout_s) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0, f"a writer exited with status {proc.exitcode}"
    return results
