"""The seam through which a rollout changes live traffic.

A rollout calls ``TrafficControl.apply(config)`` whenever the candidate's weight or the
shadow share changes, and reads ``current(model)`` to continue the generation count.
``ServeTraffic`` is the serving layer's: it writes the config into the deployment record
of every deployment of the model in the rollout's environment (``set_traffic``, a
compare-and-swap on ``deployment/<name>``), with the packages the config routes to as
the versions held; every replica follows its record within its poll interval (0.25 s
by default), loading a new package before it routes to it, without a restart.
``MemoryTraffic`` keeps the configs in this process: tests read what a rollout applied
from it, and a host with no serving layer wired logs (at INFO) what would have been applied.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from factory.serve._record import DeploymentRecord, check_env, read_record, set_traffic
from factory.serve._router import TrafficConfig
from factory.serve._traffic import version_of

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["TrafficControl", "MemoryTraffic", "ServeTraffic", "served_in"]

log = logging.getLogger(__name__)


class TrafficControl(Protocol):
    def current(self, model: str) -> TrafficConfig | None:
        """The config every replica of ``model`` follows now, or None when none was set."""

    def apply(self, config: TrafficConfig) -> None:
        """Make every replica of ``config.model`` route by ``config``; an older generation changes nothing."""


class MemoryTraffic:
    """Configs by model in this process, with the history of every one applied."""

    def __init__(self, *, announce: bool = False):
        self.history: list[TrafficConfig] = []
        self._current: dict[str, TrafficConfig] = {}
        self._lock = threading.Lock()
        self._announce = announce

    def current(self, model: str) -> TrafficConfig | None:
        with self._lock:
            return self._current.get(model)

    def apply(self, config: TrafficConfig) -> None:
        with self._lock:
            if not config.supersedes(self._current.get(config.model)):
                return
            self._current[config.model] = config
            self.history.append(config)
        if self._announce:
            log.info("no serving layer is wired to this process: %s traffic generation %d (%s) is recorded on "
                        "the rollout's run only", config.model, config.generation,
                        ", ".join(f"{v} {w:g} %" for v, w in config.weights.items()))


def served_in(store: Store, model: str, env: str) -> list[DeploymentRecord]:
    """The deployments serving ``model`` in ``env`` (by their records in the store), by name."""
    out = []
    for ref in store.refs.list("deployment/"):
        found = read_record(store, ref.name.removeprefix("deployment/"))
        if found is not None and (found[0].model, found[0].env) == (model, env):
            out.append(found[0])
    return sorted(out, key=lambda r: r.name)


class ServeTraffic:
    """``TrafficControl`` through the deployment records of ``env`` (see the module).

    ``packages``: the digests a config may route to (a rollout's candidate and
    incumbent); each config's versions with traffic or a shadow share are held.
    """

    def __init__(self, store: Store, env: str, packages: Iterable[str]):
        self.store = store
        self.env = check_env(env)
        self._digests = {version_of(d): d for d in packages}

    def current(self, model: str) -> TrafficConfig | None:
        configs = [r.traffic for r in served_in(self.store, model, self.env) if r.traffic is not None]
        return max(configs, key=lambda c: c.generation, default=None)

    def apply(self, config: TrafficConfig) -> None:
        records = served_in(self.store, config.model, self.env)
        if not records:
            log.warning("no deployment serves %s in %s: traffic generation %d reaches no replica (deploy it with "
                        "'factory serve deploy DIGEST --env %s')", config.model, self.env, config.generation, self.env)
            return
        routed = [v for v, w in config.weights.items() if w > 0] + list(config.shadows)
        held = tuple(dict.fromkeys(self._digests[v] for v in routed if v in self._digests))
        for record in records:
            set_traffic(self.store, record.name, config, versions=held,
                        reason=f"traffic generation {config.generation}: "
                               + ", ".join(f"{v} {w:g} %" for v, w in config.weights.items()))
