"""The inference log: sampled requests go to the store's ``FeatureLog``, never on the response path.

``submit`` puts a record in a bounded in-memory buffer and returns at once; a
background thread turns what has gathered into an Arrow table and appends it in one
call per flush (one Lance commit every 5 s or ``flush_rows`` rows, not one per request:
each commit costs CPU and leaves a fragment behind). When the buffer is full the record is dropped and counted: a slow store
costs log rows, never request latency. Each logged row is one input row: the request
id, its row index, the model digest and version, the time, the request's latency, each
input as a column of its own name (so skew checks find the features), and
``prediction``, a struct of the outputs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from factory.contract import DType

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from factory.contract import Contract

__all__ = ["LogRecord", "InferenceLog", "log_table", "log_name", "RESERVED"]

log = logging.getLogger(__name__)

RESERVED = ("request_id", "row", "model", "version", "ts", "latency_ms", "prediction")


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


class InferenceLog:
    """A bounded buffer of ``LogRecord`` flushed by a background thread through ``write(table)``.

    ``on_written(version, rows)`` and ``on_dropped(version, rows)`` report what happened
    to each row (for metrics). ``close`` flushes what is left, waiting at most ``timeout``.
    """

    def __init__(self, write: Callable[[pa.Table], int], *, capacity_rows: int = 50_000,
                 flush_rows: int = 5_000, flush_interval_s: float = 5.0,
                 on_written: Callable[[str, int], None] | None = None,
                 on_dropped: Callable[[str, int], None] | None = None):
        self._write = write
        self.capacity_rows = capacity_rows
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._on_written = on_written or (lambda version, rows: None)
        self._on_dropped = on_dropped or (lambda version, rows: None)
        self._pending: list[LogRecord] = []
        self._pending_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="factory-inference-log", daemon=True)
        self._thread.start()

    def submit(self, record: LogRecord) -> bool:
        """Buffer ``record``; False (and counted as dropped) when the buffer is full or closed."""
        rows = record.rows
        with self._cond:
            if self._closed or self._pending_rows + rows > self.capacity_rows:
                self.dropped += rows
                full = True
            else:
                self._pending.append(record)
                self._pending_rows += rows
                full = False
                if self._pending_rows >= self.flush_rows:
                    self._cond.notify()
        if full:
            self._on_dropped(record.version, rows)
        return not full

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written (or dropped); False on timeout."""
        with self._cond:
            self._cond.notify()
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._pending_rows >= self.flush_rows,
                                    self.flush_interval_s)
                batch, self._pending, self._pending_rows = self._pending, [], 0
                self._busy = bool(batch)
                closed = self._closed
            if batch:
                self._write_batch(batch)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            if closed and not batch:
                return

    def _write_batch(self, batch: list[LogRecord]) -> None:
        by_contract: dict[str, list[LogRecord]] = {}
        for record in batch:
            by_contract.setdefault(record.contract.digest, []).append(record)
        for records in by_contract.values():
            rows = sum(r.rows for r in records)
            try:
                self._write(log_table(records))
            except Exception as exc:  # the store may fail in any way; the server keeps serving
                log.warning("inference log: %d rows not written: %s", rows, exc)
                self.dropped += rows
                for r in records:
                    self._on_dropped(r.version, r.rows)
                continue
            self.written += rows
            for r in records:
                self._on_written(r.version, r.rows)


def log_table(records: Sequence[LogRecord]) -> pa.Table:
    """The rows of ``records`` (all under one contract) as one Arrow table."""
    import numpy as np
    import pyarrow as pa

    contract = records[0].contract
    counts = np.array([r.rows for r in records])
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    micros = [round(r.ts.timestamp() * 1e6) for r in records]
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(np.repeat([r.request_id for r in records], counts), pa.string()),
        "row": pa.array((np.arange(int(counts.sum())) - starts).astype(np.int32)),
        "model": pa.array(np.repeat([r.digest for r in records], counts), pa.string()),
        "version": pa.array(np.repeat([r.version for r in records], counts), pa.string()),
        "ts": pa.array(np.repeat(np.array(micros, dtype=np.int64), counts), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "latency_ms": pa.array(np.repeat([r.latency_ms for r in records], counts), pa.float64()),
    }
    for spec in contract.inputs:
        name = f"input_{spec.name}" if spec.name in RESERVED else spec.name
        columns[name] = _column([r.inputs[spec.name] for r in records], spec.dtype, len(spec.shape))
    outputs = {spec.name: _column([r.outputs[spec.name] for r in records], spec.dtype, len(spec.shape))
               for spec in contract.outputs}
    columns["prediction"] = pa.StructArray.from_arrays(list(outputs.values()), names=list(outputs))
    return pa.table(columns)


def _arrow_type(dtype: DType, rank: int) -> pa.DataType:
    import pyarrow as pa

    base = {
        DType.BOOL: pa.bool_(), DType.INT8: pa.int8(), DType.INT16: pa.int16(), DType.INT32: pa.int32(),
        DType.INT64: pa.int64(), DType.UINT8: pa.uint8(), DType.UINT16: pa.uint16(), DType.UINT32: pa.uint32(),
        DType.UINT64: pa.uint64(), DType.FP16: pa.float32(), DType.FP32: pa.float32(), DType.FP64: pa.float64(),
        DType.BYTES: pa.binary(),
    }[dtype]
    for _ in range(rank - 1):
        base = pa.list_(base)
    return base


def _column(arrays: Sequence[np.ndarray], dtype: DType, rank: int) -> pa.Array:
    """One column from each record's array: straight from numpy up to rank 2, through Python lists beyond."""
    import numpy as np
    import pyarrow as pa

    floats = dtype in (DType.FP16, DType.FP32, DType.FP64)
    plain = (rank <= 2 and dtype is not DType.BYTES and not any(isinstance(a, np.ma.MaskedArray) for a in arrays)
             and len({a.shape[1:] for a in arrays}) == 1)
    if plain:
        stacked = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        base = _arrow_type(dtype, 1)
        if dtype is DType.FP16:
            stacked = stacked.astype(np.float32)
        if rank == 1:
            return pa.array(stacked, base, from_pandas=floats)  # from_pandas: NaN, a float's null, becomes null
        width = stacked.shape[1]
        values = pa.array(stacked.ravel(), base, from_pandas=floats)
        offsets = pa.array(np.arange(0, width * len(stacked) + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, values)
    values = []
    for array in arrays:
        values.extend(array.tolist())  # masked elements come out as None
    if floats and rank == 1:
        values = [None if v != v else v for v in values]
    return pa.array(values, _arrow_type(dtype, rank))
