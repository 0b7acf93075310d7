"""Dataset versions from a Ray Dataset, without collecting its rows in the driver.

``DatasetStore.add`` sorts a table in memory to digest it. ``add_ray`` gives the same
digest for the same rows (and key) with the driver's memory bounded by a few batches:

1. the workers normalize each block and append its canonical row key
   (``_row_key.canonical_row_key``, bytes that sort like the canonical order); the
   keyed blocks are computed once and kept in the object store (the driver holds
   references only);
2. the rows are sorted by that key: by one task when the keyed blocks are small
   (``_ONE_TASK_BYTES``; a distributed sort's shuffle costs seconds of start-up), by Ray
   Data's sort across the cluster otherwise;
3. the driver streams the sorted batches into a new Lance dataset
   (``lance.write_dataset`` reads a ``RecordBatchReader``), so the stored rows are in
   canonical order;
4. the digest is computed by reading the Lance data back column by column, once per part
   of each column's encoding (``_canonical.digest_from_batches``).

Each streamed version gets its own Lance dataset, ``datasets/<name>.streamed/<id>.lance``,
whose location the version records like any other. If the content turns out to be known
already (the ref's current version, or a dataset stored under any name), that Lance
dataset is deleted and the ref moves to the existing artifact: as with ``add``, adding
known content leaves no new data behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from factory.errors import InvalidInputError, NotFoundError, SchemaChangeError
from factory.store._canonical import canonical_type, check_key, digest_from_batches, normalize_table
from factory.store._digest import canonical_json
from factory.store.artifacts import ArtifactKind
from factory.store.datasets._meta import DatasetMeta, DatasetVersion, _schema_change, _schema_of, check_dataset_name

if TYPE_CHECKING:
    from typing import Protocol

    import ray.data

    from factory.store._parts import StoreParts
    from factory.store.artifacts import Artifact

    class DatasetsHost(Protocol):
        """What streaming a version needs of ``_versions.DatasetStore`` (which imports this module)."""

        store: StoreParts

        def _named(self, name: str, digest: str) -> DatasetVersion: ...

        def _dataset_artifact(self, digest: str) -> Artifact: ...

__all__ = ["add_ray"]

log = logging.getLogger(__name__)

_KEY = "__factory_row_key"
# Rows per batch through the driver and per read of one column while digesting.
_BATCH_ROWS = 64 * 1024
# Rows per block of the sorted dataset, the unit the driver fetches from the object store.
_BLOCK_ROWS = 256 * 1024
# Keyed rows up to this size are sorted by one task rather than by a distributed sort.
_ONE_TASK_BYTES = 64 * 2**20


def arrow_schema(dataset: ray.data.Dataset) -> pa.Schema:
    """A Ray Dataset's schema as an Arrow schema (may run the dataset up to its first block)."""
    schema = dataset.schema()
    if schema is None:
        raise InvalidInputError("the Ray Dataset has no schema (no columns): give it at least one column")
    base = getattr(schema, "base_schema", schema)
    return base if isinstance(base, pa.Schema) else pa.schema(list(zip(schema.names, schema.types, strict=True)))


def add_ray(
    datasets: DatasetsHost,
    dataset: ray.data.Dataset,
    *,
    name: str,
    key: Sequence[str] = (),
    parents: Sequence[str] = (),
    allow_schema_change: bool = False,
    metadata: Mapping[str, Any] | None = None,
    schema: pa.Schema | None = None,
) -> DatasetVersion:
    """Store a Ray Dataset as the new version of ``name`` (see the module docstring)."""
    store = datasets.store
    check_dataset_name(name)
    parent_digests = [store.artifacts.resolve(p) for p in parents]
    missing = [p for p in parent_digests if not store.artifacts.exists(p)]
    if missing:
        raise NotFoundError(f"parent {missing[0]} is not in the store: add it first")
    try:
        extra = json.loads(canonical_json(dict(metadata or {})))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"dataset metadata must be JSON-serialisable: {exc}") from exc
    schema = normalize_table((schema or arrow_schema(dataset)).empty_table()).schema
    ref = f"dataset/{name}"
    previous = store.refs.get(ref)
    before = datasets._named(name, previous) if previous else None
    if key:
        key = check_key(schema.empty_table(), key)
    else:
        key = before.key if before is not None and all(k in schema.names for k in before.key) else ()
    columns = _schema_of(schema.empty_table())
    if before is not None and not allow_schema_change:
        changes = _schema_change(before.schema, columns)
        if changes:
            raise SchemaChangeError(
                f"dataset {name!r} changes schema ({'; '.join(changes)}): pass allow_schema_change=True "
                "to make this its new schema"
            )

    location = f"datasets/{name}.streamed/{uuid.uuid4().hex}.lance"
    uri = store.uri(location)
    try:
        options = store.storage_options
        lance_version, num_rows = _write_sorted(dataset, schema, tuple(key), uri, options)
        digest = digest_from_batches(schema, key, num_rows, lambda column: _read_column(uri, column, schema, options))
    except BaseException:
        _delete(store, uri)  # a failed or interrupted add leaves no data behind
        raise
    if digest == previous or store.artifacts.exists(digest):
        _delete(store, uri)
        if digest == previous:
            log.info("dataset %s unchanged at %s", name, digest)
            return before
        datasets._dataset_artifact(digest)  # known content must be a dataset to take the ref
    else:
        from factory.store.datasets._files import hash_files, version_files

        files = hash_files(uri, version_files(uri, lance_version, options), settings=store.settings)
        meta = DatasetMeta(location=location, lance_version=lance_version, num_rows=num_rows, key=key,
                           columns=columns, source=None, extra=extra, files=files)
        store.artifacts.add(ArtifactKind.DATASET, digest=digest, name=name, metadata=meta, parents=parent_digests)
    store.refs.set(ref, digest, expected=previous, reason="dataset add from a Ray Dataset")
    log.info("dataset %s -> %s (%d rows, streamed)", name, digest, num_rows)
    return datasets._named(name, digest)


def _keyed(batch: pa.Table, *, schema: pa.Schema, key: tuple[str, ...]) -> pa.Table:
    """On a worker: the batch in the normalized schema, with each row's canonical row key."""
    from factory.store.datasets._row_key import canonical_row_key

    if batch.num_rows == 0 and not batch.num_columns:
        batch = schema.empty_table()
    table = normalize_table(batch).select(schema.names).cast(schema)
    return table.append_column(_KEY, canonical_row_key(table, key))


def _write_sorted(dataset: ray.data.Dataset, schema: pa.Schema, key: tuple[str, ...], uri: str,
                  storage_options: Mapping[str, str] | None) -> tuple[int, int]:
    """Sort the rows canonically on the cluster and stream them into a new Lance dataset: (version, rows).

    The keyed rows are computed once and kept in the object store; the driver holds
    only references to them. Up to ``_ONE_TASK_BYTES`` they are sorted by one task (a
    distributed sort's shuffle costs seconds of fixed start-up), beyond by Ray Data's sort.
    """
    import lance
    import ray

    keyed = dataset.map_batches(_keyed, batch_format="pyarrow", fn_kwargs={"schema": schema, "key": key})
    # The sort makes as many partitions as it is given blocks: bounded ones keep each task's share small.
    keyed = keyed.repartition(target_num_rows_per_block=_BLOCK_ROWS).materialize()
    rows = keyed.count()  # known from the blocks' metadata, runs nothing
    batches: Iterator[pa.RecordBatch]
    if keyed.size_bytes() <= _ONE_TASK_BYTES:
        ordered = ray.remote(_sort_blocks).options(num_cpus=0.5).remote(schema, *keyed.to_arrow_refs())
        batches = iter(ray.get(ordered).to_batches(max_chunksize=_BATCH_ROWS))
    else:
        batches = (batch for table in keyed.sort(_KEY).iter_batches(
                       batch_size=_BATCH_ROWS, batch_format="pyarrow", prefetch_batches=1)
                   for batch in table.drop_columns([_KEY]).cast(schema).to_batches())
    reader = pa.RecordBatchReader.from_batches(schema, (b for b in batches if b.num_rows))
    written = lance.write_dataset(reader, uri, schema=schema, mode="create", storage_options=storage_options)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("streamed %d rows to %s:\n%s", rows, uri, keyed.stats())
    return written.version, rows


def _sort_blocks(schema: pa.Schema, *blocks: pa.Table) -> pa.Table:
    """On a worker: keyed blocks as one table in canonical order, without the key."""
    tables = [b for b in blocks if b.num_rows]
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table, [(_KEY, "ascending")])).drop_columns([_KEY]).cast(schema)


def _read_column(uri: str, column: str, schema: pa.Schema,
                 storage_options: Mapping[str, str] | None) -> Iterator[pa.Array]:
    """One column of the written Lance dataset, in stored order, a batch at a time, in its normalized type."""
    import lance

    want = schema.field(column).type
    for batch in lance.dataset(uri, storage_options=storage_options).to_batches(columns=[column], batch_size=_BATCH_ROWS, scan_in_order=True):
        arr = batch.column(0)
        yield arr if arr.type == want else arr.cast(canonical_type(arr.type, column))


def _delete(store, uri: str) -> None:
    """Remove a streamed version's Lance dataset, and its name's folder once it holds no other."""
    import factory.store._fs as _fs

    fs, path = _fs.filesystem(uri, store.settings)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
    if isinstance(fs, pafs.LocalFileSystem):  # object stores have no folders to leave behind
        with contextlib.suppress(OSError):  # not empty: another streamed version lives there
            os.rmdir(path.rsplit("/", 1)[0])
