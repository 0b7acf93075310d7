"""The seam through which a rollout changes live traffic.

A rollout calls ``TrafficControl.apply(config)`` whenever the candidate's weight or the
shadow share changes, and reads ``current(model)`` to continue the generation count.
The serving layer implements it by reaching every replica of the model (within a
second, without a restart). ``MemoryTraffic`` keeps the configs in this process: tests
read what a rollout applied from it, and a host with no serving layer wired logs (at INFO)
what would have been applied.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from factory.serve._router import TrafficConfig

__all__ = ["TrafficControl", "MemoryTraffic"]

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
