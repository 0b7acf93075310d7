"""Model server metrics, per model and version, in Prometheus format.

Replicas record through Ray's metrics (``ray.util.metrics``): each node's metrics
agent exports them at ``http://<node>:<metrics_export_port>/metrics`` with a ``ray_``
prefix (``ray_factory_serve_requests_total``), where a Prometheus server scrapes every
node and sums over replicas. ``MemoryRecorder`` keeps the same figures in-process,
for tests and for an analysis that reads them without Prometheus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["METRICS", "Recorder", "RayRecorder", "MemoryRecorder", "ServeMetrics"]

log = logging.getLogger(__name__)

LATENCY_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
ROWS = tuple(2**i for i in range(17))

# name -> (kind, description, tag keys, histogram boundaries)
METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "factory_serve_requests": ("counter", "Requests answered, by model, version and HTTP status code.",
                               ("model", "version", "code"), ()),
    "factory_serve_errors": ("counter", "Requests answered with a 4xx or 5xx, by model, version and code.",
                             ("model", "version", "code"), ()),
    "factory_serve_request_latency_ms": ("histogram", "Time from request to response inside the replica, in ms.",
                                         ("model", "version"), LATENCY_MS),
    "factory_serve_batch_rows": ("histogram", "Rows per forward pass (requests batched together).",
                                 ("model", "version"), ROWS),
    "factory_serve_logged_rows": ("counter", "Rows written to the inference log.", ("model", "version"), ()),
    "factory_serve_log_dropped_rows": ("counter", "Sampled rows the inference log dropped (buffer full or "
                                       "store failing).", ("model", "version"), ()),
}


class Recorder(Protocol):
    def count(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...

    def observe(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...


class RayRecorder:
    """Records through ``ray.util.metrics``; the metric objects are made on first use, in the replica.

    Counter increments are summed in-process and handed to Ray every ``flush_s`` by a
    background thread (a Ray counter call costs tens of microseconds; a dict update does
    not); histogram observations go straight through, since each one lands in a bucket.
    """

    def __init__(self, flush_s: float = 1.0) -> None:
        self._metrics: dict[str, Any] = {}
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._flush_s = flush_s
        self._thread: threading.Thread | None = None

    def _metric(self, name: str) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            from ray.util.metrics import Counter, Histogram

            kind, description, tags, boundaries = METRICS[name]
            if kind == "counter":
                metric = Counter(name, description, tag_keys=tags)
            else:
                metric = Histogram(name, description, boundaries=list(boundaries), tag_keys=tags)
            self._metrics[name] = metric
        return metric

    def count(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        key = (name, tuple(tags.items()))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + value
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="factory-serve-metrics", daemon=True)
                self._thread.start()

    def observe(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._metric(name).observe(value, tags=dict(tags))

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
        for (name, tags), value in counts.items():
            self._metric(name).inc(value, tags=dict(tags))

    def _loop(self) -> None:
        while True:
            time.sleep(self._flush_s)
            try:
                self.flush()
            except Exception as exc:  # metrics must never take the server down
                log.warning("could not hand metrics to Ray: %s", exc)


class MemoryRecorder:
    """The same figures held in-process: counter sums and histogram observations by tags."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.observations: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}

    def count(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        key = (name, tuple(sorted(tags.items())))
        with self._lock:
            self.counters[key] = self.counters.get(key, 0.0) + value

    def observe(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        key = (name, tuple(sorted(tags.items())))
        with self._lock:
            self.observations.setdefault(key, []).append(value)

    def total(self, name: str, **tags: str) -> float:
        """The sum of counter ``name`` over every series whose tags include ``tags``."""
        with self._lock:
            return sum(v for (n, t), v in self.counters.items() if n == name and tags.items() <= dict(t).items())

    def values(self, name: str, **tags: str) -> list[float]:
        with self._lock:
            return [x for (n, t), xs in self.observations.items()
                    if n == name and tags.items() <= dict(t).items() for x in xs]


class ServeMetrics:
    """What a model server records, named once here."""

    def __init__(self, model: str, recorder: Recorder):
        self.model = model
        self.recorder = recorder

    def request(self, version: str, code: int, latency_ms: float) -> None:
        tags = {"model": self.model, "version": version, "code": str(code)}
        self.recorder.count("factory_serve_requests", 1, tags)
        if code >= 400:
            self.recorder.count("factory_serve_errors", 1, tags)
        self.recorder.observe("factory_serve_request_latency_ms", latency_ms,
                              {"model": self.model, "version": version})

    def batch(self, version: str, rows: int) -> None:
        self.recorder.observe("factory_serve_batch_rows", rows, {"model": self.model, "version": version})

    def logged(self, version: str, rows: int) -> None:
        self.recorder.count("factory_serve_logged_rows", rows, {"model": self.model, "version": version})

    def dropped(self, version: str, rows: int) -> None:
        self.recorder.count("factory_serve_log_dropped_rows", rows, {"model": self.model, "version": version})
