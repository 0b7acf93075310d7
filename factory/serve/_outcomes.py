"""Business outcomes: clients report what really happened to a request, and the answering version is scored.

A client that learns the truth later (the transaction was fraud, the delivery took 41
minutes) POSTs it with the request's id: ``{"id": "...", "label": 1}`` for a class,
``{"id": "...", "value": 41.0}`` for a number, or a list with one entry per row of the
request. ``OutcomeBook`` remembers which version answered each of the last ``capacity``
requests and what it predicted, and turns a report into a right/wrong or an absolute
error for that version in the signals, which the rollout compares between versions.
A label is compared with the first label output (integers, booleans or strings: a
class), a value with the first numeric output, unless the book names its ``output``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from factory.errors import InvalidInputError, NotFoundError

__all__ = ["OutcomeBook", "OutcomeSink", "parse_outcome", "MAX_REPORT_BYTES"]

MAX_REPORT_BYTES = 1 << 20


class OutcomeSink(Protocol):
    def record_outcome(self, model: str, version: str, *, correct: bool | None = None,
                       abs_error: float | None = None) -> None: ...


def parse_outcome(body: bytes) -> tuple[str, str, list[Any]]:
    """``(request id, "label" or "value", observed per row)`` from a report's JSON body."""
    if len(body) > MAX_REPORT_BYTES:
        raise InvalidInputError(f"an outcome report is at most {MAX_REPORT_BYTES} bytes: report fewer rows at once")
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the outcome report is not JSON ({exc}): send {{\"id\": ..., \"label\": ...}}") from None
    if not isinstance(report, dict) or not isinstance(report.get("id"), str) or not report["id"]:
        raise InvalidInputError('an outcome report needs the request\'s "id" (a string) and a "label" or a "value"')
    kinds = [k for k in ("label", "value") if k in report]
    extra = sorted(set(report) - {"id", "label", "value"})
    if len(kinds) != 1 or extra:
        raise InvalidInputError(f'give exactly one of "label" or "value" besides "id" (got {sorted(report)})')
    kind = kinds[0]
    observed = report[kind]
    rows = observed if isinstance(observed, list) else [observed]
    for value in rows:
        ok = isinstance(value, (int, float, str)) and not isinstance(value, bool) if kind == "label" else \
            isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
        if not ok:
            raise InvalidInputError(f"{kind} {value!r} is not a {'class' if kind == 'label' else 'finite number'}")
    return report["id"], kind, rows


class OutcomeBook:
    """The last ``capacity`` answered requests of one model: version and prediction, by request id."""

    def __init__(self, model: str, sink: OutcomeSink, *, output: str | None = None, capacity: int = 100_000):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.model = model
        self.sink = sink
        self.output = output
        self.capacity = capacity
        self._answers: OrderedDict[str, tuple[str, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()

    def answered(self, request_id: str, version: str, outputs: Mapping[str, Any]) -> None:
        """Remember that ``version`` answered ``request_id`` with ``outputs`` (its label and its value)."""
        kept: dict[str, np.ndarray] = {}
        for name, value in outputs.items():
            if self.output is not None and name != self.output:
                continue
            array = np.asarray(value)
            kind = "value" if array.dtype.kind in "fc" else "label"
            if self.output is not None:
                kept = {"label": _first_column(array), "value": _first_column(array)}
            elif kind not in kept:
                kept[kind] = _first_column(array)
        with self._lock:
            self._answers[request_id] = (version, kept)
            self._answers.move_to_end(request_id)
            while len(self._answers) > self.capacity:
                self._answers.popitem(last=False)

    def report(self, body: bytes) -> dict[str, Any]:
        """Score a client's report (see the module); returns what was recorded."""
        request_id, kind, observed = parse_outcome(body)
        with self._lock:
            found = self._answers.get(request_id)
        if found is None:
            raise NotFoundError(f"no answered request {request_id!r} is remembered here (the last {self.capacity} "
                                "are): report outcomes with the id the response carried, soon after")
        version, kept = found
        prediction = kept.get(kind)
        if prediction is None:
            other = "value" if kind == "label" else "label"
            raise InvalidInputError(f"{self.model} has no {'class' if kind == 'label' else 'numeric'} output to score a "
                                    f"{kind} against: report a {other} instead")
        if len(observed) != len(prediction):
            raise InvalidInputError(f"request {request_id!r} had {len(prediction)} rows but the report gives "
                                    f"{len(observed)} {kind}s: give one per row")
        scores = []
        for want, got in zip(observed, prediction.tolist(), strict=True):
            if kind == "label":
                correct = str(want) == str(got) if isinstance(want, str) or isinstance(got, str) else want == got
                self.sink.record_outcome(self.model, version, correct=bool(correct))
                scores.append(bool(correct))
            else:
                error = abs(float(want) - float(got))
                self.sink.record_outcome(self.model, version, abs_error=error)
                scores.append(error)
        return {"id": request_id, "version": version, kind: observed, "scores": scores}


def _first_column(array: np.ndarray) -> np.ndarray:
    """One prediction per row: the array itself, or the first value of each row."""
    return array.reshape(array.shape[0], -1)[:, 0] if array.ndim else array.reshape(1)
