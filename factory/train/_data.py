"""The rows each worker trains on, in an order that depends only on the config.

Every worker reads the pinned Lance version of the dataset itself and puts the rows in
canonical order (by the dataset's key, else by every column read), so the order never
depends on how Lance or Ray happened to lay out fragments. The validation split, each
epoch's shuffle and each worker's share of a batch all come from generators seeded by
the config's seed (and the epoch), never from global random state. A batch is the
global batch of the config; worker ``r`` of ``w`` takes its ``r``-th contiguous slice,
and an epoch is every full batch, so a resumed run sees exactly the batches it would
have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["DataSpec", "Rows", "load_rows", "split", "epoch_order", "batch_slice", "rank_share"]

_VALIDATION_STREAM = 0x5EED
_SHUFFLE_STREAM = 0x5F1E


@dataclass(frozen=True)
class DataSpec:
    """Where the rows are and how to read them: plain values, so it pickles to any worker."""

    uri: str
    lance_version: int
    key: tuple[str, ...]
    features: tuple[str, ...]
    label: str
    task: Literal["classification", "regression"]
    storage_options: dict[str, str] | None = None  # Lance's, for a dataset on object storage


@dataclass(frozen=True)
class Rows:
    """Features as float32 ``[n, f]`` and labels (int64 class ids, or float32 targets), canonical order."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def load_rows(spec: DataSpec) -> Rows:
    """Read the version's feature and label columns and put them in canonical order."""
    import lance
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = list(dict.fromkeys([*spec.key, *spec.features, spec.label]))
    dataset = lance.dataset(spec.uri, version=spec.lance_version, storage_options=spec.storage_options)
    table = dataset.to_table(columns=columns)
    order_by = list(spec.key) or columns
    table = table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in order_by]))
    x = np.empty((table.num_rows, len(spec.features)), dtype=np.float32)
    for i, name in enumerate(spec.features):
        x[:, i] = table.column(name).to_numpy(zero_copy_only=False)
    label = table.column(spec.label)
    if pa.types.is_boolean(label.type):
        label = label.cast(pa.int64())
    target = np.int64 if spec.task == "classification" else np.float32
    y = np.ascontiguousarray(label.to_numpy(zero_copy_only=False).astype(target))
    return Rows(x, y)


def _generator(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def split(rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` row indices: a seeded permutation, the first ``int(rows*fraction)`` held out."""
    held_out = int(rows * fraction)
    perm = _generator(seed, _VALIDATION_STREAM).permutation(rows)
    return np.sort(perm[held_out:]), np.sort(perm[:held_out])


def epoch_order(train: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """The training rows of ``epoch`` in their shuffled order (the same on every worker)."""
    return train[_generator(seed, _SHUFFLE_STREAM, epoch).permutation(len(train))]


def batch_slice(order: np.ndarray, step: int, batch: int, rank: int, world: int) -> np.ndarray:
    """Worker ``rank``'s part of global batch ``step`` of an epoch's order."""
    local = batch // world
    start = step * batch + rank * local
    return order[start:start + local]


def rank_share(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Worker ``rank``'s share of rows that are only evaluated (validation)."""
    return indices[rank::world]
