"""Feature logging: what serving looked up and predicted, kept as a Lance table in the store.

Each logged row holds the request id, the model's digest, the time of the request, the
entity key, the feature values served and the prediction. The log lives at
``<home>/feature_logs/<name>.lance`` and grows by appends; ``to_dataset`` snapshots it as
a dataset version, and ``skew`` compares the served values with what the offline
point-in-time join gives for the same (entity, time): any difference is
training-serving skew.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from factory.store.datasets import DatasetVersion
    from factory.store.features._views import FeatureHost, FeatureStore

__all__ = ["REQUIRED", "FeatureLog", "SkewReport"]

log = logging.getLogger(__name__)

REQUIRED = {"request_id": "string", "model": "string", "ts": "timestamp", "prediction": "any"}


@dataclass(frozen=True)
class SkewReport:
    """Per feature: how many logged rows were compared, and the share whose served value differs."""

    rows: int
    mismatches: dict[str, int]

    def rate(self, feature: str) -> float:
        return self.mismatches[feature] / self.rows if self.rows else 0.0


class FeatureLog:
    """An append-only log of served features under a store."""

    def __init__(self, store: FeatureHost, name: str = "serving"):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
            raise InvalidInputError(f"{name!r} is not a valid log name: use letters, digits, '.', '_' or '-'")
        self.store = store
        self.name = name
        self.uri = store.uri("feature_logs", f"{name}.lance")

    def append(self, rows: pa.Table | Sequence[dict[str, Any]]) -> int:
        """Add logged rows (a table or a list of dicts); returns how many were written."""
        import lance

        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise InvalidInputError(
                f"logged rows need column(s) {', '.join(missing)}: every row carries request_id, model (digest), "
                "ts (timestamp) and prediction, besides the entity key and the features served"
            )
        ts = table.schema.field("ts").type
        if not pa.types.is_timestamp(ts) or ts.tz is None:
            raise InvalidInputError(f"column 'ts' of logged rows is {ts}: give a timestamp with a time zone (UTC)")
        if table.num_rows == 0:
            return 0
        existing = self._dataset()
        if existing is not None and existing.schema.remove_metadata() != table.schema.remove_metadata():
            try:
                table = table.select(existing.schema.names).cast(existing.schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(
                    f"logged rows do not match log {self.name!r}'s columns ({existing.schema}): {exc}"
                ) from exc
        lance.write_dataset(table, self.uri, mode="append" if existing is not None else "create",
                            storage_options=self.store.storage_options)
        return table.num_rows

    def _dataset(self):
        import lance

        if not self.store.exists(self.uri):
            return None
        return lance.dataset(self.uri, storage_options=self.store.storage_options)

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
