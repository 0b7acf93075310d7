"""The inference log: sampled requests go to the store's ``FeatureLog``, never waiting on it.

A replica keeps one ``FeatureLog.writer`` (the features package's buffered writer) and
closes it at shutdown. ``InferenceLog.submit`` turns a sampled request into its log rows
and hands them to the writer, whose ``write`` only appends to a bounded buffer: a
background thread commits the rows in batches, so no request waits for a Lance commit,
and when the buffer is full (the store is slow or down) rows are dropped and counted,
never queued without bound. Each logged row is one input row: the request id, its row
index, the model digest and version, the time, the request's latency, each input as a
column of its own name (so skew checks find the features), and ``prediction``, a
struct of the outputs. ``FeatureLog.find(request_id)`` reads a request back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from factory.contract import DType

if TYPE_CHECKING:
    import numpy as np

    from factory.contract import Contract

__all__ = ["LogRecord", "InferenceLog", "LogWriter", "log_rows", "log_name", "RESERVED"]

log = logging.getLogger(__name__)

RESERVED = ("request_id", "row", "model", "version", "ts", "latency_ms", "prediction")
_FLOATS = (DType.FP16, DType.FP32, DType.FP64)


def log_name(model: str) -> str:
    """The FeatureLog that a model's inference rows go to."""
    return f"inference-{model}"


@dataclass(frozen=True, eq=False)
class LogRecord:
    """One sampled request: who asked, which package answered, when, how fast, with what."""

    request_id: str
    digest: str
    version: str
    contract: Contract
    ts: datetime
    latency_ms: float
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


class LogWriter(Protocol):
    """What ``FeatureLog.writer(...)`` returns, as far as the inference log uses it."""

    def write(self, row: Mapping[str, Any]) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = 30.0) -> Any: ...

    def stats(self) -> Any: ...


def log_rows(record: LogRecord) -> list[dict[str, Any]]:
    """The log rows of one request: one per input row (see the module)."""
    contract = record.contract
    columns = {(f"input_{s.name}" if s.name in RESERVED else s.name): _values(record.inputs[s.name], s.dtype)
               for s in contract.inputs}
    outputs = {s.name: _values(record.outputs[s.name], s.dtype) for s in contract.outputs}
    base = {"request_id": record.request_id, "model": record.digest, "version": record.version, "ts": record.ts,
            "latency_ms": record.latency_ms}
    return [{**base, "row": i, **{name: values[i] for name, values in columns.items()},
             "prediction": {name: values[i] for name, values in outputs.items()}} for i in range(record.rows)]


def _values(array: np.ndarray, dtype: DType) -> list[Any]:
    """One Python value per row; masked elements and NaN (a float's null) become None."""
    import numpy as np

    if dtype is DType.FP16:
        array = array.astype(np.float32)
    values = array.tolist()  # masked elements come out as None
    if dtype in _FLOATS and np.isnan(np.ma.filled(array, 0.0)).any():
        values = _no_nan(values)
    return values


def _no_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


class InferenceLog:
    """Sampled requests into one model's FeatureLog through ``writer`` (see the module).

    ``on_written(version, rows)``: rows the writer took; ``on_dropped(version, rows)``: rows
    it refused (buffer full, closed). Rows lost later, in a commit that still failed at
    shutdown or that Arrow could not read, are reported as dropped with version ``""``
    (the writer counts them without their version), at most once a second and at close.
    """

    def __init__(self, writer: LogWriter, *, on_written: Callable[[str, int], None] | None = None,
                 on_dropped: Callable[[str, int], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.writer = writer
        self._on_written = on_written or (lambda version, rows: None)
        self._on_dropped = on_dropped or (lambda version, rows: None)
        self._clock = clock
        self._lock = threading.Lock()
        self._refused = 0  # rows ``write`` refused: the writer counts them as dropped too
        self._reported = 0  # later losses already reported
        self._settled_at = clock()

    def submit(self, record: LogRecord) -> int:
        """Hand ``record``'s rows to the writer; how many it took. Never waits on the store."""
        rows = log_rows(record)
        taken = sum(1 for row in rows if self.writer.write(row))
        if taken:
            self._on_written(record.version, taken)
        if taken < len(rows):
            with self._lock:
                self._refused += len(rows) - taken
            self._on_dropped(record.version, len(rows) - taken)
        if self._clock() - self._settled_at >= 1.0:
            self.settle()
        return taken

    def settle(self) -> int:
        """Report rows lost after the writer took them; how many were newly reported."""
        stats = self.writer.stats()
        with self._lock:
            self._settled_at = self._clock()
            lost = stats.dropped + stats.rejected - self._refused - self._reported
            self._reported += max(lost, 0)
        if lost > 0:
            log.warning("inference log: %d rows taken by the writer were lost (store failing or rows unreadable)",
                        lost)
            self._on_dropped("", lost)
        return max(lost, 0)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every row handed over so far is committed (or dropped); False on timeout."""
        done = self.writer.flush(timeout)
        self.settle()
        return done

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is buffered (giving up after ``timeout``) and stop the writer."""
        self.writer.close(timeout)
        self.settle()
