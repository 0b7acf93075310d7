"""Feature logging: what serving looked up and predicted, kept as a Lance table in the store.

Each logged row holds the request id, the model's digest, the time of the request, the
entity key, the feature values served and the prediction. The log lives at
``<home>/feature_logs/<name>.lance`` and grows by appends; ``to_dataset`` snapshots it as
a dataset version, and ``skew`` compares the served values with what the offline
point-in-time join gives for the same (entity, time): any difference is
training-serving skew.

Serving logs one row per request from many processes, so it writes through
``FeatureLog.writer()`` (``_log_writer``): rows are buffered and committed in batches
off the request path. ``find(request_id)`` answers from a BTREE index on
``request_id``, which ``optimize`` creates and extends (writers run it as the log grows),
so tracing one request stays a lookup, not a scan, on a log of millions of rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from factory.store.datasets import DatasetVersion
    from factory.store.features._log_writer import FeatureLogWriter
    from factory.store.features._views import FeatureHost, FeatureStore

__all__ = ["REQUIRED", "FeatureLog", "SkewReport"]

log = logging.getLogger(__name__)

REQUIRED = {"request_id": "string", "model": "string", "ts": "timestamp", "prediction": "any"}
_INDEX = "request_id_idx"
# Fragments below this many rows are merged by ``optimize``; bigger ones are left alone, so
# a row is rewritten a few times at most however long the log grows.
_TARGET_ROWS = 256 * 1024


def _check_table(table: pa.Table) -> None:
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"logged rows need column(s) {', '.join(missing)}: every row carries request_id, model (digest), "
            "ts (timestamp) and prediction, besides the entity key and the features served"
        )
    ts = table.schema.field("ts").type
    if not pa.types.is_timestamp(ts) or ts.tz is None:
        raise InvalidInputError(f"column 'ts' of logged rows is {ts}: give a timestamp with a time zone (UTC)")


@dataclass(frozen=True)
class SkewReport:
    """Per feature: how many logged rows were compared, and the share whose served value differs."""

    rows: int
    mismatches: dict[str, int]

    def rate(self, feature: str) -> float:
        return self.mismatches[feature] / self.rows if self.rows else 0.0


class FeatureLog:
    """An append-only log of served features under a store.

    ``append`` writes a batch as one Lance commit; serving, which logs one row per
    request from many processes, uses ``writer()`` instead: a buffered writer that
    commits in batches off the request path. ``find`` looks rows up by request id
    through a BTREE index that ``optimize`` (run by writers as the log grows) maintains.
    """

    def __init__(self, store: FeatureHost, name: str = "serving"):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
            raise InvalidInputError(f"{name!r} is not a valid log name: use letters, digits, '.', '_' or '-'")
        self.store = store
        self.name = name
        self.uri = store.uri("feature_logs", f"{name}.lance")
        self._schema: pa.Schema | None = None

    # -- writing ----------------------------------------------------------------

    def append(self, rows: pa.Table | Sequence[dict[str, Any]]) -> int:
        """Add logged rows (a table or a list of dicts) as one commit; returns how many were written."""
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        _check_table(table)
        if table.num_rows == 0:
            return 0
        self._commit(self._conform(table))
        return table.num_rows

    def writer(
        self,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        max_pending: int = 100_000,
        optimize_rows: int | None = 100_000,
    ) -> FeatureLogWriter:
        """A buffered writer for one row per request (see ``_log_writer``): ``write(row)`` never waits on I/O.

        Rows are committed when ``flush_rows`` are waiting or the oldest has waited
        ``flush_seconds``; at most ``max_pending`` rows wait (more are dropped and counted);
        every ``optimize_rows`` committed rows the writer runs ``optimize`` (None: never).
        """
        from factory.store.features._log_writer import FeatureLogWriter

        return FeatureLogWriter(self, flush_rows=flush_rows, flush_seconds=flush_seconds, max_pending=max_pending,
                         optimize_rows=optimize_rows)

    def _conform(self, table: pa.Table) -> pa.Table:
        """``table`` with the log's columns and types (the log's first rows define them)."""
        schema = self._known_schema()
        if schema is None or schema == table.schema.remove_metadata():
            return table
        try:
            return table.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInputError(
                f"logged rows do not match log {self.name!r}'s columns ({schema}): {exc}"
            ) from exc

    def _commit(self, table: pa.Table) -> None:
        """One Lance commit of ``table``; the first commit creates the log, even when several race to it."""
        import lance

        if self._known_schema() is None and self._create(table):
            return
        ds = lance.write_dataset(self._conform(table), self.uri, mode="append",
                                 storage_options=self.store.storage_options)
        self._schema = ds.schema.remove_metadata()

    def _create(self, table: pa.Table) -> bool:
        """Create the log holding ``table``; False if another writer created it first.

        Lance's "create" mode retries a lost race as an overwrite, which would drop the
        winner's rows, so the data files are written first and the creating commit gets
        no retry.
        """
        import lance
        from lance.fragment import write_fragments

        options = self.store.storage_options
        fragments = write_fragments(table, self.uri, schema=table.schema, storage_options=options)
        try:
            ds = lance.LanceDataset.commit(self.uri, lance.LanceOperation.Overwrite(table.schema, fragments),
                                           max_retries=0, storage_options=options)
        except Exception as exc:  # noqa: BLE001 - Lance reports a lost race as OSError or a commit conflict
            if self._known_schema() is None:
                raise
            log.info("feature log %s was created by another writer (%s): appending", self.name, exc)
            return False
        self._schema = ds.schema.remove_metadata()
        return True

    def _commit_rows(self, rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """Commit rows from a writer's buffer: (rows written, rows rejected as unreadable)."""
        table, rejected = self._rows_table(rows)
        if table.num_rows:
            _check_table(table)
            self._commit(self._conform(table))
        return table.num_rows, rejected

    def _rows_table(self, rows: Sequence[Mapping[str, Any]]) -> tuple[pa.Table, int]:
        """The rows as a table of the log's schema, leaving out (and counting) rows Arrow cannot read so."""
        schema = self._known_schema()
        try:
            return pa.Table.from_pylist(list(rows), schema=schema), 0
        except (pa.ArrowException, TypeError, ValueError):
            pass
        good = []
        for row in rows:
            try:
                one = pa.Table.from_pylist([row], schema=schema)
            except (pa.ArrowException, TypeError, ValueError):
                continue
            schema = schema or one.schema
            good.append(row)
        log.warning("feature log %s: %d of %d rows could not be read as %s and were left out",
                    self.name, len(rows) - len(good), len(rows), schema)
        return pa.Table.from_pylist(good, schema=schema), len(rows) - len(good)

    def _known_schema(self) -> pa.Schema | None:
        if self._schema is None:
            ds = self._dataset()
            if ds is not None:
                self._schema = ds.schema.remove_metadata()
        return self._schema

    # -- reading ----------------------------------------------------------------

    def _dataset(self):
        import lance

        if not self.store.exists(self.uri):
            return None
        return lance.dataset(self.uri, storage_options=self.store.storage_options)

    def find(self, request_id: str) -> pa.Table:
        """Every row logged for ``request_id`` (none: an empty table), through the request_id index."""
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(f"give a request id as a non-empty string, not {request_id!r}")
        ds = self._dataset()
        if ds is None:
            raise NotFoundError(f"nothing has been logged to {self.name!r} yet")
        return ds.to_table(filter="request_id = '" + request_id.replace("'", "''") + "'")

    def optimize(self) -> None:
        """Compact small fragments and index ``request_id`` (creating the BTREE index, or adding new rows to it).

        Safe beside writers in other processes: compaction and indexing commit like any
        append, and a run that loses a race to another ``optimize`` raises (try again later).
        """
        ds = self._dataset()
        if ds is None:
            return
        small = sum(1 for f in ds.get_fragments() if f.count_rows() < _TARGET_ROWS)
        if small > 1:
            ds.optimize.compact_files(target_rows_per_fragment=_TARGET_ROWS)
        if any(i["fields"] == ["request_id"] for i in ds.list_indices()):
            ds.optimize.optimize_indices(index_names=[_INDEX])
        else:
            ds.create_scalar_index("request_id", "BTREE", name=_INDEX)

    def read(self, filter: str | None = None) -> pa.Table:
        """Every logged row (or those matching a SQL ``filter``)."""
        ds = self._dataset()
        if ds is None:
            raise NotFoundError(f"nothing has been logged to {self.name!r} yet")
        return ds.to_table(filter=filter)

    def to_dataset(self, name: str | None = None) -> DatasetVersion:
        """Snapshot the log as a dataset version (named ``feature-log-<name>`` by default)."""
        table = self.read()
        models = sorted(set(pc.unique(table.column("model")).to_pylist()) - {None})
        parents = [m for m in models if self.store.artifacts.exists(m)] if all(isinstance(m, str) for m in models) else []
        return self.store.datasets.add(table, name=name or f"feature-log-{self.name}", parents=parents,
                                       metadata={"feature_log": self.name})

    def skew(self, features: FeatureStore, views: str | Sequence[str], *, filter: str | None = None) -> SkewReport:
        """Compare served values with the offline join of ``views`` at each row's (entity, ts).

        A feature counts as skewed on a row when served and offline values differ (a null
        on one side only is a difference). Only features present in the log are compared.
        """
        logged = self.read(filter)
        result = features.get_historical_features(logged.drop_columns(_feature_columns(logged, features, views)),
                                                  views, timestamp="ts", record=False)
        offline = result.table
        mismatches = {}
        for name in _feature_columns(logged, features, views):
            if name not in offline.column_names:
                continue  # a name shared by two views comes back prefixed: not comparable by name
            served, expected = logged.column(name), offline.column(name)
            if served.type != expected.type:
                served = served.cast(expected.type)
            differ = pc.fill_null(pc.not_equal(served, expected), True)
            both_null = pc.and_(served.is_null(), expected.is_null())
            mismatches[name] = int(np.count_nonzero(pc.and_not(differ, both_null).to_numpy(zero_copy_only=False)))
        return SkewReport(logged.num_rows, mismatches)


def _feature_columns(logged: pa.Table, features: FeatureStore, views: str | Sequence[str]) -> list[str]:
    names = []
    for view in [views] if isinstance(views, str) else views:
        names += [f for f in features.get(view).view.features if f in logged.column_names]
    return names
