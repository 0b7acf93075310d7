"""The versions of one model that a replica holds, and the routing snapshot requests read.

A replica loads each package once (through ``factory.contract.load``, after admission)
and keeps at most ``capacity`` of them. What it serves is an immutable ``Routing``
snapshot: the environment's version, the versions held, and the ``Router`` of the
traffic config in force. A change (a new environment version, a rollout's weights)
loads what is missing first, then swaps the snapshot in one assignment, so a request
sees either the old routing or the new one, never a half-loaded state, and no replica
restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, NotFoundError
from factory.serve._router import Decision, RouteRequest, Router
from factory.serve._traffic import version_of

if TYPE_CHECKING:
    from factory.contract import Contract
    from factory.serve._router import TrafficConfig

__all__ = ["LoadedVersion", "Routing", "VersionPool"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedVersion:
    """One package ready to answer: its digest, contract and model (``predict(inputs) -> outputs``)."""

    digest: str
    contract: Contract
    model: Any = field(repr=False)

    @property
    def version(self) -> str:
        return version_of(self.digest)


@dataclass(frozen=True)
class Routing:
    """What a replica serves right now. ``router`` None: everything unversioned goes to ``primary``."""

    primary: str
    versions: Mapping[str, LoadedVersion]
    router: Router | None = None

    def get(self, version: str) -> LoadedVersion:
        """The version named (12 hex digits), or ``NotFoundError`` naming the versions served."""
        found = self.versions.get(version)
        if found is None:
            raise NotFoundError(f"version {version!r} is not served here: the served versions are "
                                f"{sorted(self.versions)} (the first 12 hex digits of a package digest)")
        return found

    def decide(self, request: RouteRequest) -> Decision:
        """Which version answers an unversioned request, and which get a shadow copy of it."""
        if self.router is None:
            return Decision(self.primary, (), request.request_id, 0)
        return self.router.route(request)

    @property
    def sticky_input(self) -> str | None:
        """The input whose first value routes requests, when the traffic config routes by one."""
        sticky = self.router.config.sticky if self.router is not None else None
        return sticky.name if sticky is not None and sticky.source == "input" else None

    @property
    def weights(self) -> Mapping[str, float]:
        return self.router.config.weights if self.router is not None else {}

    @property
    def max_batch_size(self) -> int:
        return max(v.contract.resources.max_batch_size for v in self.versions.values())


class VersionPool:
    """Loaded packages by digest, at most ``capacity``; ``load(digest)`` runs admission and loading."""

    def __init__(self, load: Callable[[str], LoadedVersion], capacity: int = 4):
        if capacity < 1:
            raise InvalidInputError(f"a replica must hold at least one version, not {capacity}")
        self._load = load
        self.capacity = capacity
        self._loaded: dict[str, LoadedVersion] = {}

    def routing(self, primary: str, extra: Iterable[str] = (), traffic: TrafficConfig | None = None) -> Routing:
        """Load what is missing of ``primary`` and ``extra`` (digests), drop the rest, return the new snapshot.

        Raises (keeping what was loaded before) when a package cannot be loaded or admitted,
        or when the traffic config sends requests to a version that is not among them.
        """
        wanted = list(dict.fromkeys([primary, *extra]))
        if len(wanted) > self.capacity:
            raise InvalidInputError(f"{len(wanted)} versions requested but a replica holds at most {self.capacity}: "
                                    "drop a version from the deployment first")
        loaded = {d: self._loaded.get(d) or self._load(d) for d in wanted}
        versions = {v.version: v for v in loaded.values()}
        if traffic is not None:
            named = {v for v, w in traffic.weights.items() if w > 0} | set(traffic.shadows)
            unknown = sorted(named - set(versions))
            if unknown:
                raise InvalidInputError(f"traffic names versions {unknown} that the deployment does not hold: "
                                        f"it holds {sorted(versions)}")
        for digest in set(self._loaded) - set(loaded):
            log.info("unloading %s", digest)
        self._loaded = loaded
        return Routing(version_of(primary), versions, Router(traffic) if traffic is not None else None)

    def __len__(self) -> int:
        return len(self._loaded)
