"""The cluster's in-process signals: replicas push what they measured to one collector actor.

Each replica records its requests, shadow comparisons and outcomes into a local
``MemorySignals`` (beside its Prometheus metrics). A ``SignalsPusher`` thread hands
what gathered to the collector every ``push_s`` (a fire-and-forget actor call, off the
response path), and the collector merges them: per version and time slot, sums over
every replica on every node. A rollout host anywhere on the cluster reads its window's
figures from it with ``ClusterSignals``, without a Prometheus server and without
Prometheus' scrape and export delays; ``PrometheusSignals`` reads the same figures from
a Prometheus server instead.

The collector is a detached actor (``factory-signals`` in namespace ``factory``, no
CPU) that keeps ``retention_s`` of figures; created by the first replica or host that
needs it. Its state is only measurements: lost with it, they are measured again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from factory.errors import SignalsUnavailableError
from factory.serve._signals import MemorySignals, VersionFigures

__all__ = ["SignalsCollector", "SignalsPusher", "ClusterSignals", "collector", "COLLECTOR", "NAMESPACE"]

log = logging.getLogger(__name__)

COLLECTOR = "factory-signals"
NAMESPACE = "factory"
SLOT_S = 0.25


class SignalsCollector:
    """Figures merged from every replica (the collector actor's logic; no Ray here)."""

    def __init__(self, retention_s: float = 3600.0, slot_s: float = SLOT_S):
        self.signals = MemorySignals(slot_s=slot_s, retention_s=retention_s)

    def merge(self, drained: Sequence[tuple[str, str, float, Mapping[str, object]]]) -> None:
        self.signals.merge(drained)

    def figures(self, model: str, versions: Sequence[str], start: float, end: float) -> dict[str, VersionFigures]:
        return self.signals.figures(model, versions, start, end)


def collector(*, create: bool = True) -> Any:
    """The collector actor's handle (created when missing and ``create``); needs a connected Ray."""
    import ray

    if not create:
        return ray.get_actor(COLLECTOR, namespace=NAMESPACE)
    actor = ray.remote(num_cpus=0, max_restarts=-1)(SignalsCollector)
    return actor.options(name=COLLECTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


class SignalsPusher:
    """Hands what ``local`` gathered to the collector every ``push_s``, from a daemon thread.

    A push that fails (the collector restarting, the cluster busy) puts the figures back,
    to go with the next push.
    """

    def __init__(self, local: MemorySignals, *, push_s: float = 0.5, handle: Any = None):
        self.local = local
        self.push_s = push_s
        self._handle = handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="factory-signals-push", daemon=True)
        self._error: str | None = None

    def start(self) -> SignalsPusher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.push()

    def push(self) -> bool:
        """Send what gathered since the last push; False (figures kept) when it could not be sent."""
        drained = self.local.drain()
        if not drained:
            return True
        try:
            if self._handle is None:
                self._handle = collector()
            self._handle.merge.remote(drained)
        except Exception as exc:  # measurements wait for the next push; serving never notices
            self.local.merge(drained)
            self._handle = None
            message = f"{type(exc).__name__}: {exc}"
            if message != self._error:
                log.warning("cannot hand signals to the collector (kept for the next push): %s", message)
            self._error = message
            return False
        self._error = None
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.push_s):
            self.push()


class ClusterSignals:
    """``Signals`` read from the cluster's collector (see the module); needs a connected Ray."""

    def __init__(self, *, timeout_s: float = 10.0, handle: Any = None):
        self.timeout_s = timeout_s
        self._handle = handle

    def figures(self, model: str, versions: Iterable[str], start: float, end: float) -> dict[str, VersionFigures]:
        import ray

        if not ray.is_initialized():
            raise SignalsUnavailableError("this process is not connected to a Ray cluster, so the cluster's signals "
                                          "cannot be read: connect (RAY_ADDRESS) or read them from Prometheus")
        try:
            if self._handle is None:
                self._handle = collector()
            ref = self._handle.figures.remote(model, list(versions), start, end)
            return ray.get(ref, timeout=self.timeout_s)
        except Exception as exc:
            self._handle = None
            raise SignalsUnavailableError(f"cannot read signals from the cluster's collector ({COLLECTOR}): "
                                          f"{type(exc).__name__}: {exc}") from None
