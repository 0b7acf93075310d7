"""Package versions as OIP paths name them, and traffic splits written by hand.

A version is the first 12 hex digits of a package's digest. Which version answers a
request is the router's decision (``_router``: one ``Router`` for replicas, rollouts
and tests); ``split`` turns weights an operator writes (any non-negative numbers, e.g.
``{v1: 1, v2: 1}``) into the ``TrafficConfig`` every replica follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from factory.errors import InvalidInputError
from factory.serve._router import TrafficConfig

__all__ = ["version_of", "split"]


def version_of(digest: str) -> str:
    """A package's version as OIP paths name it: the first 12 hex digits of its digest."""
    return digest.removeprefix("sha256:")[:12]


def split(model: str, weights: Mapping[str, float], generation: int) -> TrafficConfig:
    """A ``TrafficConfig`` sending each version its share of ``weights`` (each >= 0, at least one > 0)."""
    for version, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) \
                or weight < 0:
            raise InvalidInputError(f"the traffic weight of version {version} is {weight!r}: give a number >= 0")
    total = float(sum(weights.values()))
    if not weights or total <= 0:
        raise InvalidInputError("every traffic weight is 0: give at least one version a weight above 0")
    percent = {str(v): 100.0 * w / total for v, w in weights.items()}
    last = max(percent, key=lambda v: percent[v])
    percent[last] += 100.0 - sum(percent.values())  # the sum is exactly 100 whatever the rounding
    try:
        return TrafficConfig(model=model, generation=generation, weights=percent)
    except ValueError as exc:
        raise InvalidInputError(f"cannot split {model}'s traffic as {dict(weights)}: {exc}") from None
