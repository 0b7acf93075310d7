"""Searching one collection version: queries in, nearest rows out, exact or through the index.

``search_snapshot`` decides between exact search (numpy over the version's vectors,
held in a ``MatrixCache``) and the version's Lance index, from the index's presence,
the number of rows the filter leaves and what the caller demands.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from factory.errors import InvalidInputError
from factory.store.embeddings._rows import CollectionSpec
from factory.store.embeddings._encoders import Encoder, encoder_ref
from factory.store.embeddings._vector_index import (
    EXACT_BELOW,
    IndexInfo,
    VectorMatrix,
    ann_search,
    exact_search,
)

if TYPE_CHECKING:
    import lance

__all__ = ["MatrixCache", "SearchHits", "Snapshot", "check_encoder", "prepare_queries", "scan", "search_snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """A version opened for reading: what a search needs, without touching the catalog again."""

    digest: str
    ds: Any  # lance.LanceDataset checked out at the version
    spec: CollectionSpec
    count: int
    columns: tuple[tuple[str, str], ...]
    index: IndexInfo | None
    created_at: datetime


@dataclass(frozen=True)
class SearchHits:
    """The nearest rows to one query, nearest first: ``rows`` has the id, metadata and ``_distance``."""

    ids: list[Any]
    distances: np.ndarray
    rows: pa.Table
    exact: bool
    version: str


class MatrixCache:
    """Versions' vectors in memory for exact search, least recently used dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], VectorMatrix] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], ds: lance.LanceDataset, metric: str) -> VectorMatrix:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        matrix = VectorMatrix.from_table(ds.to_table(), metric)
        self.put(key, matrix)
        return matrix

    def put(self, key: tuple[str, int], matrix: VectorMatrix) -> None:
        with self._lock:
            self._items[key] = matrix
            total = sum(m.nbytes for m in self._items.values())
            while total > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                total -= dropped.nbytes


def search_snapshot(
    snap: Snapshot,
    queries: np.ndarray,
    k: int,
    *,
    filter: str | None,
    exact: bool | None,
    columns: Sequence[str] | None,
    nprobes: int | None,
    refine_factor: int | None,
    matrix: Callable[[], VectorMatrix],
) -> list[SearchHits]:
    """One ``SearchHits`` per query row. ``exact``: None decides by index and size, True/False forces."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be a positive int, got {k!r}")
    if exact is False and snap.index is None:
        raise InvalidInputError("this version has no index: run build_index, or allow exact search")
    spec, ds = snap.spec, snap.ds
    wanted = _columns(columns, snap.columns)
    candidates = snap.count if filter is None else _count(ds, filter)
    use_exact = exact is True or snap.index is None or (exact is None and candidates < EXACT_BELOW)
    if use_exact:
        m = matrix() if filter is None else VectorMatrix.from_table(scan(ds, columns=None, filter=filter), spec.metric)
        positions, distances = exact_search(m, queries, k, spec.metric)
        tables = [
            m.rows.take(pa.array(p)).select(wanted).append_column("_distance", pa.array(d, pa.float32()))
            for p, d in zip(positions, distances, strict=True)
        ]
    else:
        assert snap.index is not None
        if nprobes is None:
            # A filter passing a fraction f of the rows needs 1/f times the partitions
            # to see as many candidates as the calibration did.
            share = max(candidates, 1) / max(snap.count, 1)
            nprobes = min(snap.index.num_partitions, math.ceil(snap.index.nprobes / share))
        try:
            tables = ann_search(
                ds, queries, k, metric=spec.metric, columns=wanted, filter=filter,
                nprobes=nprobes, refine_factor=refine_factor or snap.index.refine_factor,
            )
        except (ValueError, OSError) as exc:
            raise InvalidInputError(f"the search failed: {exc} (check the filter's SQL)") from exc
    return [
        SearchHits(t.column("id").to_pylist(), t.column("_distance").to_numpy(), t, use_exact, snap.digest)
        for t in tables
    ]


def prepare_queries(query: Any, spec: CollectionSpec, encoder: Encoder | None) -> tuple[np.ndarray, bool]:
    """Queries as an (m, dim) float32 matrix, and whether one query (not a batch) was given."""
    texts = isinstance(query, str) or (
        isinstance(query, (list, tuple)) and len(query) > 0 and all(isinstance(q, str) for q in query)
    )
    if texts:
        if encoder is None:
            hint = f" ({spec.encoder})" if spec.encoder else ""
            raise InvalidInputError(f"a text query needs the collection's encoder{hint}: pass encoder=...")
        check_encoder(spec, encoder)
        single = isinstance(query, str)
        vectors = encoder.encode([query] if single else list(query))
    else:
        try:
            vectors = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"a query must be a vector, a matrix of vectors or text: {exc}") from exc
        single = vectors.ndim == 1
    if single:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2 or vectors.shape[1] != spec.dim or len(vectors) == 0:
        raise InvalidInputError(
            f"queries must have {spec.dim} dimensions, got shape {tuple(np.shape(query))}: "
            "encode them like the collection's vectors"
        )
    if not np.isfinite(vectors).all():
        raise InvalidInputError("a query vector holds NaN or infinite values: fix the query")
    if spec.metric == "cosine" and not vectors.any(axis=1).all():
        raise InvalidInputError("a query vector is all zeros, which has no direction under the cosine metric")
    return vectors, single


def check_encoder(spec: CollectionSpec, encoder: Encoder) -> None:
    """Refuse an encoder other than the one the collection's vectors came from."""
    ref = encoder_ref(encoder)
    if spec.encoder is not None and ref != spec.encoder:
        raise InvalidInputError(
            f"this collection was embedded with {spec.encoder}, not {ref}: use the same encoder, "
            "or re-embed into a new collection"
        )
    if ref.dim != spec.dim:
        raise InvalidInputError(f"the encoder makes {ref.dim}-d vectors but the collection holds {spec.dim}-d ones")


def scan(ds: lance.LanceDataset, *, columns: Sequence[str] | None, filter: str | None) -> pa.Table:
    try:
        return ds.to_table(columns=list(columns) if columns is not None else None, filter=filter)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"cannot read with filter {filter!r} and columns {columns}: {exc}") from exc


def _count(ds: lance.LanceDataset, filter: str) -> int:
    try:
        return ds.count_rows(filter=filter)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"the filter {filter!r} is not a valid SQL predicate over the collection: {exc}") from exc


def _columns(columns: Sequence[str] | None, declared: tuple[tuple[str, str], ...]) -> list[str]:
    known = [c for c, _ in declared]
    if columns is None:
        return ["id", *known]
    unknown = [c for c in columns if c not in known and c not in ("id", "vector")]
    if unknown:
        raise InvalidInputError(
            f"unknown column(s) {', '.join(map(repr, unknown))}: choose among id, vector, {', '.join(known)}"
        )
    return ["id", *[c for c in columns if c != "id"]]
