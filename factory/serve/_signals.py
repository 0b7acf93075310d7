"""What a rollout's analysis reads: per version, over a time window, what serving measured.

``Signals.figures(model, versions, start, end)`` returns a ``VersionFigures`` per version:
requests, errors, the p99 latency, the shadow comparisons against the incumbent
(agreement per label output, mean absolute difference per numeric output) and the
business outcomes clients reported. Two sources give the same figures: ``MemorySignals``
here, fed in-process (by the model server's own measurements, and by tests), and
``PrometheusSignals`` (``_promql``), which asks a Prometheus server that scrapes the
model servers. Latency is kept as a histogram on the model server's buckets, and the
p99 is read from it the way PromQL's ``histogram_quantile`` does, so both sources
agree to the digit on the same observations.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Signals", "VersionFigures", "MemorySignals", "ServedAs", "LATENCY_BUCKETS_MS", "bucket_quantile",
           "empty_figures"]

# The model server's latency histogram boundaries (factory_serve_request_latency_ms), in ms.
LATENCY_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass(frozen=True)
class VersionFigures:
    """One version's figures over one window.

    ``compared`` counts requests whose shadow copy this version answered and that were
    compared with the answering version's reply; ``agreement`` is, per label output, the
    share of rows that agreed; ``mean_abs_diff`` is, per numeric output, the mean absolute
    difference. ``label_outcomes``/``accuracy`` and ``value_outcomes``/``mean_abs_error``
    come from outcomes clients reported for requests this version answered.
    """

    version: str
    requests: float = 0.0
    errors: float = 0.0
    p99_ms: float | None = None
    compared: float = 0.0
    agreement: Mapping[str, float] = field(default_factory=dict)
    mean_abs_diff: Mapping[str, float] = field(default_factory=dict)
    label_outcomes: float = 0.0
    accuracy: float | None = None
    value_outcomes: float = 0.0
    mean_abs_error: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None

    def to_json(self) -> dict[str, object]:
        """Plain JSON (no NaN): the figures as evidence records them."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, Mapping) else value
        out["error_rate"] = self.error_rate
        return out


def empty_figures(version: str) -> VersionFigures:
    return VersionFigures(version)


class Signals(Protocol):
    """A source of per-version figures over a window of wall-clock time (epoch seconds)."""

    def figures(self, model: str, versions: Sequence[str], start: float, end: float) -> dict[str, VersionFigures]:
        ...


class ServedAs:
    """``Signals`` of a model read under the name its replicas serve it as (``iris`` deployed as ``iris-prod``)."""

    def __init__(self, signals: Signals, names: Mapping[str, str]):
        self.signals = signals
        self.names = dict(names)

    def figures(self, model: str, versions: Sequence[str], start: float, end: float) -> dict[str, VersionFigures]:
        return self.signals.figures(self.names.get(model, model), versions, start, end)


def bucket_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram as PromQL's ``histogram_quantile`` computes it.

    ``bounds`` are the finite upper bounds, ``cumulative`` the counts at or below each of
    them followed by the total (the ``+Inf`` bucket). None when the histogram is empty.
    Linear interpolation inside the bucket holding the rank; a rank in the ``+Inf`` bucket
    reads as the highest finite bound.
    """
    counts = list(cumulative)
    for i in range(1, len(counts)):  # as PromQL does: a bucket never counts fewer than the one below
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(counts) - 1:
        return float(bounds[-1])
    if b == 0 and bounds[0] <= 0:
        return float(bounds[0])
    start, end, count = 0.0, float(bounds[b]), counts[b]
    if b > 0:
        start = float(bounds[b - 1])
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


class _Tally:
    """Sums over one time slot of one version."""

    __slots__ = ("requests", "errors", "buckets", "compared", "rows", "agreed", "abs_diff", "values",
                 "label_outcomes", "correct", "value_outcomes", "abs_error")

    def __init__(self, n_buckets: int):
        self.requests = 0
        self.errors = 0
        self.buckets = [0] * (n_buckets + 1)  # per bucket, not cumulative; the last is +Inf
        self.compared = 0
        self.rows: dict[str, int] = {}
        self.agreed: dict[str, int] = {}
        self.abs_diff: dict[str, float] = {}
        self.values: dict[str, int] = {}
        self.label_outcomes = 0
        self.correct = 0
        self.value_outcomes = 0
        self.abs_error = 0.0

    def add(self, other: _Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.compared += other.compared
        for mine, theirs in ((self.rows, other.rows), (self.agreed, other.agreed), (self.abs_diff, other.abs_diff),
                             (self.values, other.values)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        self.label_outcomes += other.label_outcomes
        self.correct += other.correct
        self.value_outcomes += other.value_outcomes
        self.abs_error += other.abs_error


class MemorySignals:
    """Figures kept in this process, in time slots of ``slot_s`` seconds, for ``retention_s``.

    Thread-safe; every ``record_*`` is a few dict updates under a lock. A window covers
    the slots that start in ``[start, end)``, so its edges are exact to ``slot_s``.
    ``error_codes`` decides which HTTP codes count as errors (by default 5xx: a client's
    bad request says nothing about the version it reached).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, slot_s: float = 1.0, retention_s: float = 3600.0,
                 buckets_ms: Sequence[float] = LATENCY_BUCKETS_MS,
                 error_codes: Callable[[int], bool] = lambda code: code >= 500):
        if slot_s <= 0 or retention_s < slot_s:
            raise ValueError(f"slot_s ({slot_s}) must be > 0 and at most retention_s ({retention_s})")
        self._clock = clock
        self._slot_s = slot_s
        self._keep = max(1, math.ceil(retention_s / slot_s))
        self._bounds = tuple(float(b) for b in buckets_ms)
        self._is_error = error_codes
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], dict[int, _Tally]] = {}

    def _tally(self, model: str, version: str, at: float | None) -> _Tally:
        slot = math.floor((self._clock() if at is None else at) / self._slot_s)
        slots = self._slots.setdefault((model, version), {})
        tally = slots.get(slot)
        if tally is None:
            tally = slots[slot] = _Tally(len(self._bounds))
            for old in [s for s in slots if s <= slot - self._keep]:  # once per new slot: a few dozen keys
                del slots[old]
        return tally

    def record_request(self, model: str, version: str, code: int, latency_ms: float, *, at: float | None = None) -> None:
        """One request answered by ``version`` with HTTP ``code`` after ``latency_ms``."""
        index = next((i for i, b in enumerate(self._bounds) if latency_ms <= b), len(self._bounds))
        with self._lock:
            tally = self._tally(model, version, at)
            tally.requests += 1
            tally.errors += int(self._is_error(code))
            tally.buckets[index] += 1

    def record_comparison(self, model: str, version: str, *, agreed: Mapping[str, tuple[int, int]],
                          abs_diff: Mapping[str, tuple[float, int]], at: float | None = None) -> None:
        """One shadow comparison of ``version``'s reply: per label output (agreed rows, rows),
        per numeric output (sum of absolute differences, values)."""
        with self._lock:
            tally = self._tally(model, version, at)
            tally.compared += 1
            for output, (same, rows) in agreed.items():
                tally.agreed[output] = tally.agreed.get(output, 0) + same
                tally.rows[output] = tally.rows.get(output, 0) + rows
            for output, (total, values) in abs_diff.items():
                tally.abs_diff[output] = tally.abs_diff.get(output, 0.0) + total
                tally.values[output] = tally.values.get(output, 0) + values

    def record_outcome(self, model: str, version: str, *, correct: bool | None = None, abs_error: float | None = None,
                       at: float | None = None) -> None:
        """A client's observed outcome for a request ``version`` answered: a label (right or
        wrong) or a value (its absolute error)."""
        with self._lock:
            tally = self._tally(model, version, at)
            if correct is not None:
                tally.label_outcomes += 1
                tally.correct += int(correct)
            if abs_error is not None:
                tally.value_outcomes += 1
                tally.abs_error += abs_error

    def drain(self) -> list[tuple[str, str, float, dict[str, object]]]:
        """Take every slot recorded so far, forgetting them here: ``(model, version, slot middle, sums)``.

        What a replica hands to the cluster's collector, which ``merge``s them into its own.
        """
        with self._lock:
            slots, self._slots = self._slots, {}
        return [(model, version, (slot + 0.5) * self._slot_s, {k: getattr(t, k) for k in _Tally.__slots__})
                for (model, version), by_slot in slots.items() for slot, t in by_slot.items()]

    def merge(self, drained: Iterable[tuple[str, str, float, Mapping[str, object]]]) -> None:
        """Add what another ``MemorySignals`` drained (on the same latency buckets) to these figures."""
        with self._lock:
            for model, version, at, sums in drained:
                other = _Tally(len(self._bounds))
                for key in _Tally.__slots__:
                    setattr(other, key, sums[key])
                self._tally(model, version, at).add(other)

    def figures(self, model: str, versions: Sequence[str], start: float, end: float) -> dict[str, VersionFigures]:
        first, last = math.floor(start / self._slot_s), math.ceil(end / self._slot_s)
        out = {}
        with self._lock:
            for version in versions:
                total = _Tally(len(self._bounds))
                for slot, tally in self._slots.get((model, version), {}).items():
                    if first <= slot < last:
                        total.add(tally)
                out[version] = self._figures(version, total)
        return out

    def _figures(self, version: str, t: _Tally) -> VersionFigures:
        cumulative = list(_running(t.buckets))
        return VersionFigures(
            version=version,
            requests=float(t.requests),
            errors=float(t.errors),
            p99_ms=bucket_quantile(0.99, self._bounds, cumulative),
            compared=float(t.compared),
            agreement={o: t.agreed.get(o, 0) / n for o, n in sorted(t.rows.items()) if n},
            mean_abs_diff={o: t.abs_diff.get(o, 0.0) / n for o, n in sorted(t.values.items()) if n},
            label_outcomes=float(t.label_outcomes),
            accuracy=t.correct / t.label_outcomes if t.label_outcomes else None,
            value_outcomes=float(t.value_outcomes),
            mean_abs_error=t.abs_error / t.value_outcomes if t.value_outcomes else None,
        )


def _running(values: Iterable[int]) -> Iterable[int]:
    total = 0
    for value in values:
        total += value
        yield total
