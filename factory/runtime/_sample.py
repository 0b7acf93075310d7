"""Deterministic samples of dataset versions: the same version, size and seed give the same rows,
stored as a dataset version whose parent is the version sampled (its lineage says where it came from)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory.errors import InvalidInputError

if TYPE_CHECKING:
    from factory.store import Store
    from factory.store.datasets import DatasetVersion

__all__ = ["sample_dataset", "sample_size"]


def sample_size(num_rows: int, *, fraction: float | None = None, rows: int | None = None) -> int:
    """How many rows a sample of ``num_rows`` keeps (``fraction`` rounded, or ``rows``, at most all of them)."""
    if (fraction is None) == (rows is None):
        raise InvalidInputError("give a sample's size as fraction or as rows, one of them")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise InvalidInputError(f"sample fraction {fraction} must be in (0, 1]")
        return min(num_rows, max(1, round(num_rows * fraction))) if num_rows else 0
    if rows is None or rows < 1:
        raise InvalidInputError(f"sample rows {rows} must be at least 1")
    return min(num_rows, rows)


def sample_dataset(store: Store, source: str, *, name: str | None = None, fraction: float | None = None,
                   rows: int | None = None, seed: int = 0) -> DatasetVersion:
    """A deterministic sample of the dataset version ``source`` (digest, ``name`` or ``name@N``), stored
    as a version of ``name`` (default ``<source name>-sample``) with ``source`` as its parent."""
    import numpy as np

    version = store.datasets.get(source)
    keep = sample_size(version.num_rows, fraction=fraction, rows=rows)
    table = store.datasets.read(version)
    digest_bits = int(version.digest.removeprefix("sha256:")[:16], 16)
    rng = np.random.default_rng([seed, digest_bits])
    chosen = np.sort(rng.choice(version.num_rows, size=keep, replace=False)) if keep else np.array([], dtype=np.int64)
    sample = table.take(chosen)
    metadata = {"sample_of": version.digest, "sample_rows": keep, "sample_seed": seed}
    return store.datasets.add(sample, name=name or f"{version.name}-sample", key=version.key,
                              parents=[version.digest], metadata=metadata)
