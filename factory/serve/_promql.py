"""Signals from a Prometheus server, by PromQL over its HTTP API (``/api/v1/query``).

Each figure is an instant query evaluated at the window's end over a range as long as
the window: request and error counts are ``increase`` of the model server's counters
summed by version, the p99 is ``histogram_quantile(0.99, ...)`` over the latency
histogram's ``rate``, and the shadow and outcome figures are ratios of ``increase`` of
their counters. Counts are Prometheus' estimates (``increase`` extrapolates to the
window's edges); on a window whose edges fall on scrapes they equal the in-process
figures exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from factory.errors import SignalsUnavailableError
from factory.serve._signals import VersionFigures

__all__ = ["PrometheusSignals", "MetricNames"]


@dataclass(frozen=True)
class MetricNames:
    """The series PromQL reads: by default as Ray's metrics agent exports the model server's metrics."""

    requests: str = "ray_factory_serve_requests_total"
    errors: str = "ray_factory_serve_errors_total"
    latency_bucket: str = "ray_factory_serve_request_latency_ms_bucket"
    error_codes: str = "5.."
    shadow_compared: str = "ray_factory_shadow_compared_total"
    shadow_rows: str = "ray_factory_shadow_rows_total"
    shadow_agreed: str = "ray_factory_shadow_agreed_rows_total"
    shadow_values: str = "ray_factory_shadow_values_total"
    shadow_abs_diff: str = "ray_factory_shadow_abs_diff_total"
    outcome_labels: str = "ray_factory_outcome_labels_total"
    outcome_correct: str = "ray_factory_outcome_correct_total"
    outcome_values: str = "ray_factory_outcome_values_total"
    outcome_abs_error: str = "ray_factory_outcome_abs_error_total"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusSignals:
    """``Signals`` read from the Prometheus server at ``url`` (e.g. ``http://prometheus:9090``).

    ``selector``: extra label matchers for every series (``{"namespace": "ml"}``).
    """

    def __init__(self, url: str, *, names: MetricNames = MetricNames(), selector: Mapping[str, str] | None = None,
                 timeout_s: float = 5.0, client: Any = None):
        import httpx

        self.url = url.rstrip("/")
        self.names = names
        self.selector = dict(selector or {})
        self._client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def query(self, promql: str, at: float) -> list[tuple[dict[str, str], float]]:
        """One instant query at ``at``: (labels, value) per series; NaN values are left out."""
        import httpx

        try:
            reply = self._client.get(f"{self.url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"})
            body = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignalsUnavailableError(f"cannot query Prometheus at {self.url}: {exc}") from None
        if reply.status_code != 200 or body.get("status") != "success":
            raise SignalsUnavailableError(f"Prometheus at {self.url} refused {promql!r}: "
                                          f"{body.get('error', reply.status_code)}")
        out = []
        for series in body["data"]["result"]:
            value = float(series["value"][1])
            if not math.isnan(value):
                out.append((series["metric"], value))
        return out

    def _matchers(self, model: str) -> str:
        return ",".join([f"model={_quote(model)}", *(f"{k}={_quote(v)}" for k, v in self.selector.items())])

    def _sum(self, metric: str, model: str, window: str, at: float, by: str = "version", extra: str = "") -> \
            dict[tuple[str, ...], float]:
        promql = f"sum by ({by}) (increase({metric}{{{self._matchers(model)}{extra}}}[{window}]))"
        keys = by.split(", ")
        return {tuple(labels.get(k, "") for k in keys): value for labels, value in self.query(promql, at)}

    def figures(self, model: str, versions: Sequence[str], start: float, end: float) -> dict[str, VersionFigures]:
        n = self.names
        window = f"{max(1, round((end - start) * 1000))}ms"
        matchers = self._matchers(model)
        requests = self._sum(n.requests, model, window, end)
        errors = self._sum(n.errors, model, window, end, extra=f",code=~{_quote(n.error_codes)}")
        p99 = {labels.get("version", ""): value for labels, value in self.query(
            f"histogram_quantile(0.99, sum by (version, le) (rate({n.latency_bucket}{{{matchers}}}[{window}])))", end)}
        compared = self._sum(n.shadow_compared, model, window, end)
        rows = self._sum(n.shadow_rows, model, window, end, by="version, output")
        agreed = self._sum(n.shadow_agreed, model, window, end, by="version, output")
        values = self._sum(n.shadow_values, model, window, end, by="version, output")
        abs_diff = self._sum(n.shadow_abs_diff, model, window, end, by="version, output")
        labels = self._sum(n.outcome_labels, model, window, end)
        correct = self._sum(n.outcome_correct, model, window, end)
        numbers = self._sum(n.outcome_values, model, window, end)
        abs_error = self._sum(n.outcome_abs_error, model, window, end)
        out = {}
        for version in versions:
            v = (version,)
            n_labels, n_values = labels.get(v, 0.0), numbers.get(v, 0.0)
            out[version] = VersionFigures(
                version=version,
                requests=requests.get(v, 0.0),
                errors=errors.get(v, 0.0),
                p99_ms=p99.get(version),
                compared=compared.get(v, 0.0),
                agreement={o: agreed.get((version, o), 0.0) / c for (ver, o), c in sorted(rows.items())
                           if ver == version and c > 0},
                mean_abs_diff={o: abs_diff.get((version, o), 0.0) / c for (ver, o), c in sorted(values.items())
                               if ver == version and c > 0},
                label_outcomes=n_labels,
                accuracy=correct.get(v, 0.0) / n_labels if n_labels > 0 else None,
                value_outcomes=n_values,
                mean_abs_error=abs_error.get(v, 0.0) / n_values if n_values > 0 else None,
            )
        return out
