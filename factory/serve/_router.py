"""Which version answers a request, and which versions get a shadow copy of it.

A ``TrafficConfig`` says how one served model's unversioned traffic splits between the
versions a replica holds: weights in percent (summing to 100), shadow targets with the
percentage of requests each one mirrors, an optional sticky key, and a generation number
that only grows, so a replica never goes back to an older config it receives late.

``route(request, config)`` is a pure function: the primary version is drawn by hashing
the request's routing key (the sticky key's value when the request carries one, else
its id) onto the weights laid end to end in version order, so a key lands on the same
version for as long as the weights stay, and a version's share of keys is its weight.
Shadow copies are drawn from separate hashes of the request id, one per target: a
shadow never depends on, and so never changes, the primary draw. No Ray, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = ["TrafficConfig", "StickyKey", "RouteRequest", "Decision", "Router", "route", "unit_hash"]

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SUM_TOLERANCE = 1e-6
_PRIMARY = b"factory-route"  # BLAKE2b personalisation: the primary and shadow draws never share a hash
_SHADOW = b"factory-shadow"


def _version(name: str) -> str:
    if not _VERSION.fullmatch(name):
        raise ValueError(f"{name!r} is not a version name: use the first 12 hex digits of the package digest")
    return name


Version = Annotated[str, AfterValidator(_version)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


class StickyKey(BaseModel):
    """Where a request's routing key comes from: a header (``x-user``) or an input's first value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["header", "input"]
    name: str = Field(min_length=1, max_length=128)

    @model_validator(mode="after")
    def _lowercase_header(self) -> StickyKey:
        if self.source == "header" and self.name != self.name.lower():
            raise ValueError(f"header names are matched in lowercase: write {self.name.lower()!r}")
        return self


class TrafficConfig(BaseModel):
    """How a model's unversioned traffic splits between versions; every replica follows the newest.

    ``weights``: percent of requests per version, summing to 100; every version a replica
    must hold is listed (a shadow-only version with weight 0). ``shadows``: percent of
    requests whose copy goes to that version (never to the version that answers).
    ``generation``: grows with every change; older generations are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    generation: int = Field(ge=0)
    weights: dict[Version, Percent] = Field(min_length=1)
    shadows: dict[Version, Percent] = Field(default_factory=dict)
    sticky: StickyKey | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrafficConfig:
        total = sum(self.weights.values())
        if abs(total - 100.0) > _SUM_TOLERANCE:
            shown = ", ".join(f"{v}={w:g}" for v, w in self.weights.items())
            raise ValueError(f"traffic weights are percentages and must sum to 100, not {total:g} ({shown})")
        stray = sorted(set(self.shadows) - set(self.weights))
        if stray:
            raise ValueError(f"shadow targets {stray} are not among the versions {sorted(self.weights)}: "
                             "list every version in weights (a shadow-only version with weight 0)")
        return self

    @classmethod
    def single(cls, model: str, version: str, generation: int) -> TrafficConfig:
        """Everything to one version, no shadows."""
        return cls(model=model, generation=generation, weights={version: 100.0})

    def weight(self, version: str) -> float:
        return self.weights.get(version, 0.0)

    def supersedes(self, other: TrafficConfig | None) -> bool:
        """Whether a replica holding ``other`` should switch to this config."""
        return other is None or self.generation > other.generation


@dataclass(frozen=True)
class RouteRequest:
    """What routing reads of a request: its id, headers (lowercase names) and decoded inputs."""

    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)


class Decision(NamedTuple):
    """The version that answers, the versions that get a copy, the key drawn on, and the config's generation."""

    primary: str
    shadows: tuple[str, ...]
    key: str
    generation: int


def unit_hash(text: str, person: bytes = _PRIMARY) -> float:
    """A deterministic, uniform point in [0, 1) for ``text``."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _first_value(value: Any) -> str | None:
    """The first scalar of an input (a list, a nested list or an array) as text, or None when empty."""
    while True:
        if hasattr(value, "ravel") and hasattr(value, "size"):  # numpy without importing it
            if value.size == 0:
                return None
            value = value.ravel()[0]
            value = value.item() if hasattr(value, "item") else value
            break
        if isinstance(value, (list, tuple)):
            if not value:
                return None
            value = value[0]
            continue
        break
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 7 and 7.0 are one key whatever the client's JSON encoder wrote
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Router:
    """One config prepared for routing many requests: the weights laid out once."""

    def __init__(self, config: TrafficConfig):
        self.config = config
        bounds = []
        edge = 0.0
        for version in sorted(config.weights):
            weight = config.weights[version]
            if weight > 0:
                edge += weight
                bounds.append((edge, version))
        self._bounds = tuple(bounds)
        self._last = bounds[-1][1]
        self._total = edge
        self._shadows = tuple((v, p) for v, p in sorted(config.shadows.items()) if p > 0)
        self._generation = config.generation

    def key(self, request: RouteRequest) -> str:
        """The routing key: the sticky key's value when the request carries one, else the request id."""
        sticky = self.config.sticky
        if sticky is not None:
            if sticky.source == "header":
                value = request.headers.get(sticky.name)
            else:
                value = _first_value(request.inputs[sticky.name]) if sticky.name in request.inputs else None
            if value:
                return f"{sticky.source}:{sticky.name}={value}"
        return f"id:{request.request_id}"

    def primary(self, key: str) -> str:
        point = unit_hash(key) * self._total
        for edge, version in self._bounds:
            if point < edge:
                return version
        return self._last  # rounding left the point on the very last edge

    def route(self, request: RouteRequest) -> Decision:
        key = self.key(request)
        primary = self.primary(key)
        shadows = tuple(v for v, p in self._shadows
                        if v != primary and unit_hash(f"{request.request_id}\x00{v}", _SHADOW) * 100.0 < p) \
            if self._shadows else ()
        return Decision(primary, shadows, key, self._generation)


def route(request: RouteRequest, config: TrafficConfig) -> Decision:
    """Which version answers ``request`` under ``config`` and which get a copy (see the module)."""
    return Router(config).route(request)

