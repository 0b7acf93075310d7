"""The signals a rollout judges by, as Prometheus metrics, and helpers to export them.

``SIGNAL_METRICS`` is the part of the model server's metric table (``_metrics.METRICS``)
that signals are read from: requests, errors and latency per version, shadow
comparisons and business outcomes. A replica records them through its recorder
(``RecorderSink``), so Prometheus scrapes them with the rest. Through Ray's metrics
agent every name gains a ``ray_`` prefix, and counters a ``_total`` suffix:
``PrometheusSignals`` asks for those names by default.

``FanOut`` hands every record to several sinks (an exporter and in-process signals);
``ClientRecorder`` is a recorder on ``prometheus-client``, for a process that exports
metrics itself rather than through Ray.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from factory.serve._metrics import METRICS, FanOut, Recorder, RecorderSink  # FanOut: re-exported

__all__ = ["SIGNAL_METRICS", "Recorder", "RecorderSink", "ClientRecorder", "FanOut"]

# name -> (kind, description, tag keys, histogram bounds), as in METRICS.
SIGNAL_METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    name: METRICS[name] for name in (
        "factory_serve_requests", "factory_serve_errors", "factory_serve_request_latency_ms",
        "factory_shadow_compared", "factory_shadow_rows", "factory_shadow_agreed_rows", "factory_shadow_values",
        "factory_shadow_abs_diff", "factory_outcome_labels", "factory_outcome_correct", "factory_outcome_values",
        "factory_outcome_abs_error")
}


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
