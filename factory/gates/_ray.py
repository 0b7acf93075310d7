"""Policies in parallel as Ray tasks: the one place gates touches Ray.

Each policy of a set runs as its own task, which opens the store by its home and
settings (every node reaches the same store) and builds the policy from its spec
through the installed entry points, so nothing unpicklable (a private key, a live
store, a plugin's instance) travels. Signing stays with the caller. A task that dies
or raises yields a FAIL naming what happened: a lost worker never reads as a pass.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from factory.gates.policy import PolicyResult, Verdict

if TYPE_CHECKING:
    from factory.gates.policy_sets import PolicySpec
    from factory.settings import Settings
    from factory.store import Store

__all__ = ["ray_connected", "evaluate_on_ray"]

_TASK: Any = None


def ray_connected() -> bool:
    """Whether this process is connected to a Ray cluster (Ray is not imported to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _evaluate_policy(home: str, settings: Settings, digest: str, policy_id: str,
                     config: dict[str, Any]) -> PolicyResult:
    from factory.gates.evaluation import evaluate
    from factory.gates.policy import default_policies
    from factory.store import Store

    policy = default_policies().create(policy_id, **config)
    return evaluate(Store(home, settings=settings), digest, [policy])[0]


def _task():
    global _TASK
    if _TASK is None:
        import ray

        _TASK = ray.remote(num_cpus=1, max_retries=0)(_evaluate_policy)
    return _TASK


def evaluate_on_ray(store: Store, digest: str, specs: Sequence[PolicySpec], *,
                    on_result: Callable[[PolicyResult], None] | None = None) -> list[PolicyResult]:
    """Each spec's result for ``digest``, in the order given, evaluated as parallel Ray tasks."""
    import ray

    task = _task()
    pending = {task.remote(store.home, store.settings, digest, spec.id, dict(spec.config)): i
               for i, spec in enumerate(specs)}
    results: list[PolicyResult | None] = [None] * len(specs)
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for ref in done:
            i = pending[ref]
            try:
                result = ray.get(ref)
            except Exception as exc:  # a worker that died, or a policy that failed to build there
                cause = getattr(exc, "cause", None) or exc
                result = PolicyResult(specs[i].id, "", Verdict.FAIL,
                                      f"the policy's Ray task failed ({type(cause).__name__}: {cause})")
            results[i] = result
            if on_result is not None:
                on_result(result)
    return [r for r in results if r is not None]
