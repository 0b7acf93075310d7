"""The signals as Prometheus metrics: their names, and a sink that records them through a recorder.

The model server already exports requests, errors and latency per model and version
(``factory_serve_*``). Shadow comparisons and business outcomes are recorded the same
way, under the names in ``SIGNAL_METRICS`` (same shape as the model server's metric
table: kind, description, tag keys, histogram bounds), so a replica records them through
its own recorder and Prometheus scrapes them with the rest. Through Ray's metrics agent
every name gains a ``ray_`` prefix, and counters a ``_total`` suffix:
``PrometheusSignals`` asks for those names by default.

``RecorderSink`` turns ``record_request``/``record_comparison``/``record_outcome`` calls
(from the ``Shadower``, the ``OutcomeBook`` or a test) into recorder counts and
observations. ``ClientRecorder`` is a recorder on ``prometheus-client``, for a process
that exports metrics itself rather than through Ray.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from factory.serve._signals import LATENCY_BUCKETS_MS

__all__ = ["SIGNAL_METRICS", "Recorder", "RecorderSink", "ClientRecorder", "FanOut"]

_MV = ("model", "version")
_MVO = ("model", "version", "output")

# name -> (kind, description, tag keys, histogram bounds): the model server's own three
# first (its names, for a process that records them without the model server), then ours.
SIGNAL_METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "factory_serve_requests": ("counter", "Requests answered, by model, version and HTTP status code.",
                               ("model", "version", "code"), ()),
    "factory_serve_errors": ("counter", "Requests answered with a 4xx or 5xx, by model, version and code.",
                             ("model", "version", "code"), ()),
    "factory_serve_request_latency_ms": ("histogram", "Time from request to response inside the replica, in ms.",
                                         _MV, LATENCY_BUCKETS_MS),
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
    """The model server's recorder interface (``factory.serve`` ``RayRecorder``/``MemoryRecorder``)."""

    def count(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...

    def observe(self, name: str, value: float, tags: Mapping[str, str]) -> None: ...


class RecorderSink:
    """Records signals through a ``Recorder`` under the ``SIGNAL_METRICS`` names."""

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


class ClientRecorder:
    """A ``Recorder`` on ``prometheus-client``: names gain ``prefix`` (``ray_`` to look like Ray's export).

    ``declare(model, versions)`` creates every series at zero, so Prometheus sees a
    counter before its first increment (``increase`` cannot count what came before a
    series' first sample).
    """

    def __init__(self, registry: Any = None, *, prefix: str = "",
                 metrics: Mapping[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = SIGNAL_METRICS):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._defs = dict(metrics)
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        for name, (kind, description, tags, bounds) in self._defs.items():
            if kind == "counter":
                self._metrics[name] = Counter(prefix + name, description, tags, registry=self.registry)
            else:
                self._metrics[name] = Histogram(prefix + name, description, tags, buckets=tuple(bounds),
                                                registry=self.registry)

    def count(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._metrics[name].labels(**tags).inc(value)

    def observe(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._metrics[name].labels(**tags).observe(value)

    def declare(self, model: str, versions: Sequence[str], *, codes: Sequence[int] = (200, 500),
                outputs: Sequence[str] = ()) -> None:
        for name, (_, _, tags, _) in self._defs.items():
            for version in versions:
                base = {"model": model, "version": version}
                if "code" in tags:
                    for code in codes:
                        self._metrics[name].labels(**base, code=str(code))
                elif "output" in tags:
                    for output in outputs:
                        self._metrics[name].labels(**base, output=output)
                else:
                    self._metrics[name].labels(**base)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
