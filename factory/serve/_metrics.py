"""Model server metrics, per model and version, in Prometheus format: one table of names.

``METRICS`` names everything a replica records: requests, errors by code, latency,
batch rows and inference-log rows, and the signals a rollout judges by besides those
(shadow comparisons, reported outcomes). Replicas record through Ray's metrics
(``ray.util.metrics``): each node's metrics agent exports them at
``http://<node>:<metrics_export_port>/metrics`` with a ``ray_`` prefix (and counters with
``_total``: ``ray_factory_serve_requests_total``), where a Prometheus server scrapes
every node and sums over replicas; ``PrometheusSignals`` reads those names.
``MemoryRecorder`` keeps the same figures in-process, for tests.

``RecorderSink`` is the one place that turns a request, a shadow comparison or an
outcome into counts and observations; ``ServeMetrics`` is what a model server records,
through it and into any in-process ``Signals`` (``MemorySignals``) beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from factory.serve._signals import LATENCY_BUCKETS_MS

__all__ = ["METRICS", "Recorder", "RayRecorder", "MemoryRecorder", "RecorderSink", "ServeMetrics"]

log = logging.getLogger(__name__)

ROWS = tuple(2**i for i in range(17))
_MV = ("model", "version")
_MVO = ("model", "version", "output")

# name -> (kind, description, tag keys, histogram boundaries)
METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "factory_serve_requests": ("counter", "Requests answered, by model, version and HTTP status code.",
                               ("model", "version", "code"), ()),
    "factory_serve_errors": ("counter", "Requests answered with a 4xx or 5xx, by model, version and code.",
                             ("model", "version", "code"), ()),
    "factory_serve_request_latency_ms": ("histogram", "Time from request to response inside the replica, in ms.",
                                         _MV, LATENCY_BUCKETS_MS),
    "factory_serve_batch_rows": ("histogram", "Rows per forward pass (requests batched together).", _MV, ROWS),
    "factory_serve_logged_rows": ("counter", "Sampled rows handed to the inference log's writer.", _MV, ()),
    "factory_serve_log_dropped_rows": ("counter", "Sampled rows the inference log lost: refused by a full buffer "
                                       "(by version), or lost in a commit (version \"\").", _MV, ()),
    "factory_shadow_compared": ("counter", "Shadow replies compared with the answering version's.", _MV, ()),
    "factory_shadow_rows": ("counter", "Rows compared, per label output.", _MVO, ()),
    "factory_shadow_agreed_rows": ("counter", "Rows on which the shadow reply agreed, per label output.", _MVO, ()),
    "factory_shadow_values": ("counter", "Values compared, per numeric output.", _MVO, ()),
    "factory_shadow_abs_diff": ("counter", "Sum of absolute differences from the answering version's reply, per "
                                "numeric output.", _MVO, ()),
    "factory_outcome_labels": ("counter", "Reported class outcomes of requests this version answered.", _MV, ()),
    "factory_outcome_correct": ("counter", "Reported class outcomes this version had right.", _MV, ()),
    "factory_outcome_values": ("counter", "Reported numeric outcomes of requests this version answered.", _MV, ()),
    "factory_outcome_abs_error": ("counter", "Sum of absolute errors against reported numeric outcomes.", _MV, ()),
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


class RecorderSink:
    """Records requests, shadow comparisons and outcomes through a ``Recorder`` under the ``METRICS`` names."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def record_request(self, model: str, version: str, code: int, latency_ms: float) -> None:
        tags = {"model": model, "version": version, "code": str(code)}
        self.recorder.count("factory_serve_requests", 1, tags)
        if code >= 400:
            self.recorder.count("factory_serve_errors", 1, tags)
        self.recorder.observe("factory_serve_request_latency_ms", latency_ms, {"model": model, "version": version})

    def record_comparison(self, model: str, version: str, *, agreed: Mapping[str, tuple[int, int]],
                          abs_diff: Mapping[str, tuple[float, int]]) -> None:
        count = self.recorder.count
        count("factory_shadow_compared", 1, {"model": model, "version": version})
        for output, (same, rows) in agreed.items():
            tags = {"model": model, "version": version, "output": output}
            count("factory_shadow_rows", rows, tags)
            count("factory_shadow_agreed_rows", same, tags)
        for output, (total, values) in abs_diff.items():
            tags = {"model": model, "version": version, "output": output}
            count("factory_shadow_values", values, tags)
            count("factory_shadow_abs_diff", total, tags)

    def record_outcome(self, model: str, version: str, *, correct: bool | None = None,
                       abs_error: float | None = None) -> None:
        tags = {"model": model, "version": version}
        if correct is not None:
            self.recorder.count("factory_outcome_labels", 1, tags)
            self.recorder.count("factory_outcome_correct", int(correct), tags)
        if abs_error is not None:
            self.recorder.count("factory_outcome_values", 1, tags)
            self.recorder.count("factory_outcome_abs_error", abs_error, tags)


class FanOut:
    """One sink that hands every record to several (in-process signals and an exporter, say)."""

    def __init__(self, *sinks: Any):
        self.sinks = sinks

    def record_request(self, *args: Any, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.record_request(*args, **kwargs)

    def record_comparison(self, *args: Any, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.record_comparison(*args, **kwargs)

    def record_outcome(self, *args: Any, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.record_outcome(*args, **kwargs)


class ServeMetrics:
    """What a model server records, named once here.

    ``sink`` takes requests, shadow comparisons and outcomes (the ``Shadower``'s and the
    ``OutcomeBook``'s sink): recorded through ``recorder``, and also into each of
    ``signals`` (``MemorySignals``: the in-process analysis reads those).
    """

    def __init__(self, model: str, recorder: Recorder, *, signals: tuple[Any, ...] = ()):
        self.model = model
        self.recorder = recorder
        self.sink = FanOut(RecorderSink(recorder), *signals) if signals else RecorderSink(recorder)

    def request(self, version: str, code: int, latency_ms: float) -> None:
        self.sink.record_request(self.model, version, code, latency_ms)

    def batch(self, version: str, rows: int) -> None:
        self.recorder.observe("factory_serve_batch_rows", rows, {"model": self.model, "version": version})

    def logged(self, version: str, rows: int) -> None:
        self.recorder.count("factory_serve_logged_rows", rows, {"model": self.model, "version": version})

    def dropped(self, version: str, rows: int) -> None:
        self.recorder.count("factory_serve_log_dropped_rows", rows, {"model": self.model, "version": version})
