"""Embedding collections: versioned (id, vector, metadata) rows on Lance, searchable at any version.

Each collection is one Lance dataset at ``<home>/embeddings/<name>.lance``. Every
change (create, add, upsert, update, delete, an index build) is a Lance commit; every
change of content is also a collection version: an ``embedding-collection`` artifact
whose digest is the content's (rows, metric, encoder), and the ref
``embeddings/<name>`` moves to it by compare-and-swap. A Lance tag ``sha256-<hex>``
in the dataset maps each digest to the Lance version that holds it (the newest one,
so the index built for it comes along).

Pinning is using the digest. Tags and aliases are refs ``embeddings/<name>/<tag>``;
swapping the corpus a service retrieves from is moving such a ref (``promote``),
with no change to the encoder or the model.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError, NotFoundError
from factory.store._digest import is_digest
from factory.store.embeddings._rows import (
    ID_TYPES,
    METRICS,
    CollectionMeta,
    CollectionSpec,
    check_name,
    check_tag,
    coerce_rows,
    collection_digest,
    metadata_fields,
    parse_columns,
    rows_digest,
)
from factory.store.embeddings._search import (
    MatrixCache,
    SearchHits,
    Snapshot,
    check_encoder,
    prepare_queries,
    scan,
    search_snapshot,
)
from factory.store.embeddings._encoders import (
    Encoder,
    EncoderRef,
    HashingEncoder,
    SentenceEncoder,
    encoder_ref,
)
from factory.store.embeddings._vector_index import (
    EXACT_BELOW,
    INDEX_NAME,
    IndexInfo,
    VectorMatrix,
    build_index,
    choose_index_type,
    index_info,
)
from factory.store.artifacts import ArtifactKind

if TYPE_CHECKING:
    import lance

    from factory.store._parts import StoreParts

__all__ = [
    "EXACT_BELOW",
    "EmbeddingStore",
    "EmbeddingVersion",
    "Encoder",
    "EncoderRef",
    "HashingEncoder",
    "IndexInfo",
    "SearchHits",
    "SentenceEncoder",
]

log = logging.getLogger(__name__)

_LANCE_TAG = "sha256-"
_UNSET: Any = object()


@dataclass(frozen=True)
class EmbeddingVersion:
    """One version of a collection, as a search or a read sees it."""

    digest: str
    name: str
    version: int  # 1-based position in the collection's history
    uri: str
    lance_version: int
    count: int
    dim: int
    metric: str
    id_type: str
    columns: tuple[tuple[str, str], ...]
    encoder: EncoderRef | None
    index: IndexInfo | None
    created_at: datetime


class EmbeddingStore:
    """Collections of embeddings in a store, each a Lance dataset with versions, tags and an index."""

    def __init__(self, store: StoreParts, *, cache_bytes: int = 2 << 30):
        self.store = store
        self._matrices = MatrixCache(cache_bytes)
        self._snapshots: OrderedDict[tuple[str, str, int], Snapshot] = OrderedDict()
        self._handles: dict[str, lance.LanceDataset] = {}
        self._lock = threading.Lock()

    # -- names and locations -------------------------------------------------------------

    def uri(self, name: str) -> str:
        return self.store.uri("embeddings", f"{check_name(name)}.lance")

    @staticmethod
    def ref(name: str, tag: str | None = None) -> str:
        """The ref of a collection's latest version, or of one of its tags."""
        return f"embeddings/{check_name(name)}" + (f"/{check_tag(tag)}" if tag else "")

    def names(self) -> list[str]:
        return sorted(r.name.split("/", 1)[1] for r in self.store.refs.list("embeddings/") if r.name.count("/") == 1)

    def _dataset(self, name: str, lance_version: int | None = None) -> lance.LanceDataset:
        import lance

        if self.store.refs.get(self.ref(name)) is None:
            raise NotFoundError(f"no embedding collection named {name!r}: create it first (known: {self._known()})")
        ds = lance.dataset(self.uri(name), storage_options=self.store.storage_options)
        return ds if lance_version is None else ds.checkout_version(lance_version)

    def _known(self) -> str:
        return ", ".join(self.names()) or "none"

    # -- writing ------------------------------------------------------------------------

    def create(
        self,
        name: str,
        dim: int | None = None,
        *,
        id_type: str = "string",
        metric: str = "cosine",
        columns: dict[str, str | pa.DataType] | pa.Schema | None = None,
        encoder: Encoder | None = None,
        parents: Iterable[str] = (),
    ) -> EmbeddingVersion:
        """Make an empty collection: version 1. ``dim`` defaults to the encoder's."""
        import lance

        check_name(name)
        if encoder is not None:
            if dim is not None and dim != encoder.dim:
                raise InvalidInputError(f"dim={dim} but the encoder {encoder.name} makes {encoder.dim}-d vectors: drop dim")
            dim = encoder.dim
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 65536:
            raise InvalidInputError(f"dim must be an int between 1 and 65536 (or give an encoder), got {dim!r}")
        if metric not in METRICS:
            raise InvalidInputError(f"metric {metric!r} is not supported: use one of {', '.join(METRICS)}")
        if id_type not in ID_TYPES:
            raise InvalidInputError(f"id_type {id_type!r} is not supported: use one of {', '.join(ID_TYPES)}")
        if self.store.refs.get(self.ref(name)) is not None:
            raise InvalidInputError(f"the collection {name!r} already exists: add to it, or pick another name")
        spec = CollectionSpec(dim, metric, id_type, encoder_ref(encoder) if encoder else None)
        schema = spec.schema(parse_columns(columns))
        try:
            ds = lance.write_dataset(schema.empty_table(), self.uri(name), mode="create",
                                     storage_options=self.store.storage_options)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot create {self.uri(name)} ({exc}): a dataset is already there without a collection ref; "
                "remove it or pick another name"
            ) from exc
        return self._record(name, ds, spec, "create", expected=None, parents=parents)

    def add(
        self,
        name: str,
        data: Any,
        *,
        encoder: Encoder | None = None,
        text_column: str = "text",
        parents: Iterable[str] = (),
    ) -> EmbeddingVersion:
        """Append new rows; an id already in the collection is an error (use ``upsert`` to replace)."""
        import lance

        ds, spec, expected = self._begin(name)
        table = coerce_rows(data, ds.schema, spec, encode=self._encode_fn(spec, encoder), text_column=text_column)
        existing = ds.to_table(columns=["id"]).column("id")
        dup = table.column("id").filter(pc.is_in(table.column("id"), value_set=existing.combine_chunks()))
        if len(dup):
            raise InvalidInputError(
                f"id(s) {_some(dup)} are already in {name!r}: use upsert to replace rows, or give new ids"
            )
        ds = lance.write_dataset(table, ds, mode="append", storage_options=self.store.storage_options)
        return self._record(name, ds, spec, "add", expected=expected, parents=parents)

    def upsert(
        self, name: str, data: Any, *, encoder: Encoder | None = None, text_column: str = "text",
        parents: Iterable[str] = (),
    ) -> EmbeddingVersion:
        """Insert new rows and replace rows whose id is already there."""
        ds, spec, expected = self._begin(name)
        table = coerce_rows(data, ds.schema, spec, encode=self._encode_fn(spec, encoder), text_column=text_column)
        ds.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(table)
        return self._record(name, self._dataset(name), spec, "upsert", expected=expected, parents=parents)

    def update(
        self, name: str, data: Any, *, encoder: Encoder | None = None, text_column: str = "text",
        parents: Iterable[str] = (),
    ) -> EmbeddingVersion:
        """Change existing rows: each row gives an id and the columns to change (vector, metadata)."""
        ds, spec, expected = self._begin(name)
        table = coerce_rows(
            data, ds.schema, spec, encode=self._encode_fn(spec, encoder), text_column=text_column, partial=True
        )
        ids = table.column("id").combine_chunks()
        current = ds.to_table(filter=pc.field("id").isin(ids))
        missing = ids.filter(pc.invert(pc.is_in(ids, value_set=current.column("id").combine_chunks())))
        if len(missing):
            raise NotFoundError(f"id(s) {_some(missing)} are not in {name!r}: use add or upsert for new rows")
        order = pc.index_in(current.column("id"), value_set=ids)
        aligned = table.take(order)
        for column in table.column_names:
            if column != "id":
                current = current.set_column(current.schema.get_field_index(column), column, aligned.column(column))
        ds.merge_insert("id").when_matched_update_all().execute(current)
        return self._record(name, self._dataset(name), spec, "update", expected=expected, parents=parents)

    def delete(self, name: str, ids: Sequence[Any], *, missing_ok: bool = False) -> EmbeddingVersion:
        """Remove rows by id; unknown ids are an error unless ``missing_ok``."""
        ds, spec, expected = self._begin(name)
        try:
            wanted = pa.array(list(ids), type=ID_TYPES[spec.id_type])
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise InvalidInputError(f"ids must be {spec.id_type} for {name!r}: {exc}") from exc
        if len(wanted) == 0:
            raise InvalidInputError("no ids given: pass the ids of the rows to delete")
        present = ds.to_table(columns=["id"], filter=pc.field("id").isin(wanted)).column("id").combine_chunks()
        missing = wanted.filter(pc.invert(pc.is_in(wanted, value_set=present)))
        if len(missing) and not missing_ok:
            raise NotFoundError(f"id(s) {_some(missing)} are not in {name!r}: check them, or pass missing_ok=True")
        if len(present) == 0:
            return self.get(name)
        ds.delete(pc.field("id").isin(present))
        return self._record(name, self._dataset(name), spec, "delete", expected=expected, parents=())

    def build_index(
        self,
        name: str,
        *,
        index_type: str | None = None,
        target_recall: float = 0.95,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        seed: int = 0,
    ) -> EmbeddingVersion:
        """Index the latest version for fast approximate search, tuned to reach ``target_recall``@10.

        With no ``index_type`` a collection under ``EXACT_BELOW`` rows gets no index
        (exact search is faster there) and larger ones get the type that fits their
        size; naming a type builds it whatever the size. The settings are calibrated
        against exact search on probe queries near the data and kept with the version.
        """
        if not 0 < target_recall <= 1:
            raise InvalidInputError(f"target_recall must be in (0, 1], got {target_recall}")
        ds, spec, expected = self._begin(name)
        count = ds.count_rows()
        if index_type is None:
            if count < EXACT_BELOW:
                log.info("%s has %d rows (< %d): exact search is faster, no index built", name, count, EXACT_BELOW)
                return self.get(name)
            index_type = choose_index_type(count)
        matrix = self._matrices.get((self.uri(name), ds.version), ds, spec.metric)
        ds, _ = build_index(
            ds, matrix, metric=spec.metric, index_type=index_type, num_partitions=num_partitions,
            num_sub_vectors=num_sub_vectors, target_recall=min(1.0, target_recall + 0.02), seed=seed,
        )
        return self._record(name, ds, spec, "build_index", expected=expected, parents=())

    def _begin(self, name: str) -> tuple[lance.LanceDataset, CollectionSpec, str]:
        expected = self.store.refs.get(self.ref(name))
        if expected is None:
            raise NotFoundError(f"no embedding collection named {name!r}: create it first (known: {self._known()})")
        ds = self._dataset(name)
        return ds, CollectionSpec.from_schema(ds.schema), expected

    def _encode_fn(self, spec: CollectionSpec, encoder: Encoder | None):
        if encoder is None:
            return None
        check_encoder(spec, encoder)
        return encoder.encode

    def _record(
        self,
        name: str,
        ds: lance.LanceDataset,
        spec: CollectionSpec,
        operation: str,
        *,
        expected: str | None,
        parents: Iterable[str],
    ) -> EmbeddingVersion:
        """Turn the Lance dataset's latest version into a collection version (artifact, tag, ref)."""
        info = index_info(ds)
        if info is not None and ds.stats.index_stats(INDEX_NAME).get("num_unindexed_rows", 0):
            # New rows go into a delta segment that reuses the trained centroids (milliseconds),
            # rather than being scanned at every query. Lance's default merge re-partitions
            # the whole index (1 partition, 12 s on 60k rows; measured), so it is not used.
            ds.optimize.optimize_indices(num_indices_to_merge=0)
            ds = self._dataset(name)
            info = index_info(ds)
            segments = ds.stats.index_stats(INDEX_NAME).get("num_segments", 1)
            if segments > 16:
                log.warning("%s: the index has %d delta segments; run build_index to rebuild it", name, segments)
        table = ds.to_table()
        rows = rows_digest(table)
        digest = collection_digest(rows, spec)
        meta = CollectionMeta(
            collection=name,
            lance_version=ds.version,
            dim=spec.dim,
            metric=spec.metric,  # type: ignore[arg-type]
            id_type=spec.id_type,  # type: ignore[arg-type]
            count=table.num_rows,
            rows_digest=rows,
            columns=[(f.name, str(f.type)) for f in metadata_fields(ds.schema)],
            encoder=spec.encoder.to_json() if spec.encoder else None,
            index=info.to_json() if info else None,
            operation=operation,
        )
        lineage = [expected] if expected and expected != digest else []
        self.store.artifacts.add(
            ArtifactKind.EMBEDDING_COLLECTION, digest=digest, metadata=meta, parents=[*lineage, *parents], name=name
        )
        tag = _LANCE_TAG + digest.removeprefix("sha256:")
        if tag in ds.tags.list():
            ds.tags.update(tag, ds.version)
        else:
            ds.tags.create(tag, ds.version)
        if digest != expected:
            self.store.refs.set(self.ref(name), digest, expected=expected, reason=operation)
        self._matrices.put((self.uri(name), ds.version), VectorMatrix.from_table(table, spec.metric))
        return self.get(name, digest)

    # -- reading ------------------------------------------------------------------------

    def get(self, name: str, version: int | str | None = None) -> EmbeddingVersion:
        """A version by number (1-based), tag or alias, digest (or a prefix of one); latest if None."""
        snap = self._snapshot(name, self._digest(name, version))
        history = self._history(name)
        number = len(history) - history[::-1].index(snap.digest) if snap.digest in history else 0
        return EmbeddingVersion(
            digest=snap.digest,
            name=name,
            version=number,
            uri=self.uri(name),
            lance_version=snap.ds.version,
            count=snap.count,
            dim=snap.spec.dim,
            metric=snap.spec.metric,
            id_type=snap.spec.id_type,
            columns=snap.columns,
            encoder=snap.spec.encoder,
            index=snap.index,
            created_at=snap.created_at,
        )

    def versions(self, name: str) -> list[EmbeddingVersion]:
        return [self.get(name, n) for n in range(1, len(self._history(name)) + 1)]

    def _history(self, name: str) -> list[str]:
        history = [c.new for c in self.store.refs.history(self.ref(name)) if c.new is not None]
        if not history:
            raise NotFoundError(f"no embedding collection named {name!r}: create it first (known: {self._known()})")
        return history

    def _digest(self, name: str, version: int | str | None) -> str:
        """The digest a version spec names (reading the history only where it must)."""
        if version is None or version == "latest":
            digest = self.store.refs.get(self.ref(name))
            if digest is None:
                raise NotFoundError(f"no embedding collection named {name!r}: create it first (known: {self._known()})")
            return digest
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if isinstance(version, int) and not isinstance(version, bool):
            history = self._history(name)
            if not 1 <= version <= len(history):
                raise NotFoundError(f"{name!r} has versions 1 to {len(history)}, not {version}")
            return history[version - 1]
        if not isinstance(version, str):
            raise InvalidInputError(f"a version is an int, a tag or a digest, not {type(version).__name__}")
        if is_digest(version):
            return version  # _snapshot checks that it is a version of this collection
        if version.startswith("sha256:"):
            matches = {d for d in self._history(name) if d.startswith(version)}
            if len(matches) != 1:
                problem = "no version" if not matches else "several versions"
                raise NotFoundError(f"{problem} of {name!r} match {version!r}: give more of a digest from its history")
            return matches.pop()
        digest = self.store.refs.get(self.ref(name, version))
        if digest is None:
            known = ", ".join(self.tags(name)) or "none"
            raise NotFoundError(f"{name!r} has no version, tag or alias {version!r} (tags: {known})")
        return digest

    def _snapshot(self, name: str, digest: str) -> Snapshot:
        """The Lance version holding ``digest`` in this collection, opened once and cached.

        The digest's Lance tag is read afresh each time, so an index built later (which
        moves the tag) is picked up; the opened dataset keeps Lance's index cache warm.
        """
        ds = self._handle(name)
        try:
            lance_version = ds.tags.get_version(_LANCE_TAG + digest.removeprefix("sha256:"))
        except ValueError as exc:
            raise NotFoundError(f"{digest} is not a version of {name!r}: see its history with versions()") from exc
        key = (self.uri(name), digest, lance_version)
        with self._lock:
            snap = self._snapshots.get(key)
            if snap is not None:
                self._snapshots.move_to_end(key)
                return snap
        artifact = self.store.artifacts.get(digest)
        meta = artifact.meta(CollectionMeta)
        at = ds.checkout_version(lance_version)
        snap = Snapshot(
            digest=digest,
            ds=at,
            spec=CollectionSpec.from_schema(at.schema),
            count=meta.count,
            columns=tuple((f.name, str(f.type)) for f in metadata_fields(at.schema)),
            index=index_info(at),
            created_at=artifact.created_at,
        )
        with self._lock:
            self._snapshots[key] = snap
            while len(self._snapshots) > 16:
                self._snapshots.popitem(last=False)
        return snap

    def _handle(self, name: str) -> lance.LanceDataset:
        """One open dataset per collection for tag look-ups (Lance reads tags afresh each time)."""
        import lance

        uri = self.uri(name)
        with self._lock:
            ds = self._handles.get(uri)
        if ds is None:
            try:
                ds = lance.dataset(uri, storage_options=self.store.storage_options)
            except (ValueError, OSError) as exc:
                raise NotFoundError(f"no embedding collection named {name!r} (known: {self._known()})") from exc
            with self._lock:
                self._handles[uri] = ds
        return ds

    def lance(self, name: str, version: int | str | None = None) -> lance.LanceDataset:
        """The Lance dataset checked out at ``version``."""
        return self._dataset(name, self.get(name, version).lance_version)

    def read(
        self,
        name: str,
        version: int | str | None = None,
        *,
        columns: Sequence[str] | None = None,
        filter: str | None = None,
    ) -> pa.Table:
        """The rows of a version, sorted by id."""
        ds = self.lance(name, version)
        if columns is not None and "id" not in columns:
            columns = ["id", *columns]
        table = scan(ds, columns=columns, filter=filter)
        return table.take(pc.sort_indices(table.column("id")))

    # -- tags and aliases ---------------------------------------------------------------

    def tags(self, name: str) -> dict[str, str]:
        prefix = self.ref(name) + "/"
        return {r.name[len(prefix) :]: r.target for r in self.store.refs.list(prefix)}

    def tag(self, name: str, version: int | str | None, tag: str, *, move: bool = False, reason: str = "") -> EmbeddingVersion:
        """Name a version. An existing tag moves only with ``move=True`` (see ``promote``)."""
        if tag == "latest":
            raise InvalidInputError("'latest' always means the newest version: pick another tag name")
        ref = self.ref(name, tag)
        digest = self._snapshot(name, self._digest(name, version)).digest
        current = self.store.refs.get(ref)
        if current == digest:
            return self.get(name, digest)
        if current is not None and not move:
            raise InvalidInputError(
                f"tag {tag!r} of {name!r} already names {current}: pass move=True (or promote) to move it"
            )
        self.store.refs.set(ref, digest, expected=current, reason=reason or f"tag {tag}")
        return self.get(name, digest)

    def promote(
        self, name: str, version: int | str | None, alias: str = "serving", *, expected: str | None = _UNSET,
        reason: str = "",
    ) -> EmbeddingVersion:
        """Point ``alias`` at a version (compare-and-swap with ``expected`` when given).

        This is how a service's retrieval corpus is swapped: the service reads the alias,
        the encoder and the model stay as they are.
        """
        ref = self.ref(name, alias)
        digest = self._snapshot(name, self._digest(name, version)).digest
        if expected is _UNSET:
            expected = self.store.refs.get(ref)
        self.store.refs.set(ref, digest, expected=expected, reason=reason or f"promote to {alias}")
        return self.get(name, digest)

    def resolve(self, spec: str) -> str:
        """A digest from ``embeddings/<name>[/<tag>]`` or ``<name>[@<version|tag|digest>]``."""
        if spec.startswith("embeddings/"):
            return self.store.refs.require(spec)
        name, _, version = spec.partition("@")
        return self._snapshot(name, self._digest(name, version or None)).digest

    # -- search -------------------------------------------------------------------------

    def search(
        self,
        name: str,
        query: Any,
        k: int = 10,
        *,
        version: int | str | None = None,
        filter: str | None = None,
        exact: bool | None = None,
        encoder: Encoder | None = None,
        columns: Sequence[str] | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
    ) -> SearchHits | list[SearchHits]:
        """The ``k`` nearest rows to a query (one ``SearchHits``) or to each of many (a list).

        ``query``: a vector, a matrix of vectors, a text or a list of texts (with the
        collection's ``encoder``). ``filter`` is a SQL predicate over the metadata,
        applied before ranking. ``exact``: None picks exact search when the version has
        no index or is small, True forces it, False demands the index.
        """
        snap = self._snapshot(name, self._digest(name, version))
        queries, single = prepare_queries(query, snap.spec, encoder)
        key = (self.uri(name), snap.ds.version)
        hits = search_snapshot(
            snap, queries, k, filter=filter, exact=exact, columns=columns, nprobes=nprobes,
            refine_factor=refine_factor, matrix=lambda: self._matrices.get(key, snap.ds, snap.spec.metric),
        )
        return hits[0] if single else hits


def _some(values: pa.Array | pa.ChunkedArray, limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit].to_pylist())
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
