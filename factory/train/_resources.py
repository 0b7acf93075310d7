"""Whether a cluster can ever place a job's workers, checked before anything is submitted.

Ray would otherwise wait forever for a placement group that cannot fit. The check is a
pure function of the request and each node's total resources, so unit tests drive it
without a cluster; ``cluster_nodes`` is the one place that asks Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from factory.errors import InvalidInputError

__all__ = ["ACCELERATOR_PREFIX", "cluster_nodes", "check_resources", "worker_bundle"]

ACCELERATOR_PREFIX = "accelerator_type:"
# What Ray itself reserves on a node of the requested accelerator type (see ScalingConfig).
_ACCELERATOR_SHARE = 0.001
_EPSILON = 1e-9


def worker_bundle(resources: Mapping[str, float], accelerator: str | None) -> dict[str, float]:
    """One worker's full request, the accelerator type included as Ray expresses it."""
    bundle = {k: float(v) for k, v in resources.items() if v}
    if accelerator:
        bundle[ACCELERATOR_PREFIX + accelerator] = _ACCELERATOR_SHARE
    return bundle


def _fits(node: Mapping[str, float], bundle: Mapping[str, float]) -> int:
    """How many copies of ``bundle`` one node can hold."""
    count = math.inf
    for name, need in bundle.items():
        count = min(count, math.floor(node.get(name, 0.0) / need + _EPSILON))
    return int(count) if count != math.inf else 0


def _describe(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"


def check_resources(workers: int, bundle: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> None:
    """Raise ``InvalidInputError`` unless ``workers`` copies of ``bundle`` fit on ``nodes`` at once."""
    totals: dict[str, float] = {}
    for node in nodes:
        for name, value in node.items():
            totals[name] = totals.get(name, 0.0) + value
    # Accelerator types first: "no such GPUs" says more than "0 GPUs".
    for name, need in sorted(bundle.items(), key=lambda kv: (not kv[0].startswith(ACCELERATOR_PREFIX), kv[0])):
        have = totals.get(name, 0.0)
        if name.startswith(ACCELERATOR_PREFIX) and have <= 0:
            kinds = sorted(k.removeprefix(ACCELERATOR_PREFIX) for k in totals if k.startswith(ACCELERATOR_PREFIX))
            raise InvalidInputError(
                f"the compute tier needs {name.removeprefix(ACCELERATOR_PREFIX)} GPUs, and the cluster has "
                f"{'only ' + ', '.join(kinds) if kinds else 'no GPUs of a known type'}: choose another compute.tier "
                "or add such nodes"
            )
        if need * workers > have + _EPSILON:
            unit = name if not name.startswith(ACCELERATOR_PREFIX) else name.removeprefix(ACCELERATOR_PREFIX)
            raise InvalidInputError(
                f"the job asks for {workers} worker{'s' if workers != 1 else ''} x {need:g} {unit} = {need * workers:g} {unit}, and the cluster "
                f"has {have:g}: lower compute.workers or the per-worker request (compute.cpus_per_worker, "
                "compute.tier), or add nodes"
            )
    placeable = sum(_fits(node, bundle) for node in nodes)
    if placeable < workers:
        biggest = max((dict(n) for n in nodes), key=lambda n: n.get("CPU", 0.0), default={})
        raise InvalidInputError(
            f"the job asks for {workers} workers of {_describe(bundle)} each; the cluster's nodes can hold only "
            f"{placeable} at once (largest node: {_describe({k: v for k, v in biggest.items() if k in bundle})}): "
            "lower compute.cpus_per_worker so workers fit on one node each, or add larger nodes"
        )


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of each alive node of the connected cluster."""
    import ray

    return [
        {k: float(v) for k, v in node.get("Resources", {}).items() if not k.startswith("node:")}
        for node in ray.nodes()
        if node.get("Alive")
    ]
