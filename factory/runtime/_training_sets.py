"""A point-in-time training set: labelled (entity, timestamp) rows joined against feature views,
optionally split by time into a training part and a holdout, each stored as a dataset version.

The ``features`` pipeline step and the demo's training-set phase both call ``point_in_time_set``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from factory.runtime._task import import_function

if TYPE_CHECKING:
    from factory.store import DatasetVersion, Store

__all__ = ["TrainingSet", "point_in_time_set"]


@dataclass(frozen=True)
class TrainingSet:
    """The stored training part, the holdout (None without a split) and the joined version both come from."""

    dataset: DatasetVersion
    holdout: DatasetVersion | None
    joined: str


def point_in_time_set(store: Store, rows: str, views: Sequence[str], *, name: str, timestamp: str,
                      key: Sequence[str] = (), holdout: float | None = None, holdout_name: str | None = None,
                      transform: str | None = None, transform_args: Mapping[str, Any] | None = None,
                      allow_backfill: bool = False) -> TrainingSet:
    """Join dataset version ``rows`` against feature views ``views`` (names or digests) as of each row's time.

    ``holdout``: the most recent share of the rows (by ``timestamp``, then ``key``) becomes a
    second version, ``holdout_name`` (default ``<name>-holdout``), that the model never sees.
    ``transform`` (``module:function``) is applied to the training part only, as
    ``function(table, **transform_args)``: a cleaning step, or a fault injected on purpose.
    """
    joined = store.features.get_historical_features(rows, list(views), timestamp=timestamp,
                                                    allow_backfill=allow_backfill, name=f"{name}-joined")
    table = joined.table
    order = [(timestamp, "ascending"), *((k, "ascending") for k in key if k != timestamp)]
    table = table.sort_by(order)
    cut = table.num_rows if holdout is None else int(round(table.num_rows * (1.0 - holdout)))
    train, held = table.slice(0, cut), table.slice(cut)
    if transform:
        train = import_function(transform, "features transform")(train, **dict(transform_args or {}))
    parents = [joined.version.digest]
    trained = store.datasets.add(train, name=name, key=list(key), parents=parents)
    kept = None
    if holdout is not None:
        kept = store.datasets.add(held, name=holdout_name or f"{name}-holdout", key=list(key), parents=parents)
    return TrainingSet(trained, kept, joined.version.digest)
