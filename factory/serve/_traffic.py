"""Which version answers a request: a pure function of the request's key and the weights.

A model server holds several versions of one model. Requests that name a version get
it; the others go to the environment's version, or, while a traffic split is set
(a rollout's canary), to a version drawn by the weights. The draw hashes the request's
key, so the same key always lands on the same version under the same weights (sticky
routing when a client sends a stable key) and the shares match the weights over many
keys. No Ray, no clock, no randomness: unit-tested as is.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from factory.errors import InvalidInputError

__all__ = ["choose", "check_weights", "version_of"]


def version_of(digest: str) -> str:
    """A package's version as OIP paths name it: the first 12 hex digits of its digest."""
    return digest.removeprefix("sha256:")[:12]


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights by version, each finite and >= 0, at least one > 0; returned as a plain dict."""
    out = {}
    for version, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) \
                or weight < 0:
            raise InvalidInputError(f"the traffic weight of version {version} is {weight!r}: give a number >= 0")
        out[str(version)] = float(weight)
    if out and not any(out.values()):
        raise InvalidInputError("every traffic weight is 0: give at least one version a weight above 0")
    return out


def choose(weights: Mapping[str, float], key: str) -> str:
    """The version that ``key`` lands on: each version's share of keys is its share of the total weight."""
    total = sum(weights.values())
    point = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64 * total
    chosen = ""
    for version in sorted(weights):
        weight = weights[version]
        if weight <= 0:
            continue
        chosen = version
        if point < weight:
            return version
        point -= weight
    return chosen  # rounding left the point at the very end: the last version with weight
