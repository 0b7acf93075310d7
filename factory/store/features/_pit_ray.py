"""The point-in-time join on Ray Data, for inputs larger than one process's memory.

Both sides are tagged with a partition number (a hash of the entity key, equal for
equal keys whatever their integer width or string layout), unioned into one dataset,
and grouped by partition: each group holds every entity row and every feature row of
its entities, and runs the in-process kernel (``_pit.join``) on them. Since the rule
depends only on an entity's own rows and their content (ties are broken by content,
never by position), the result equals the in-process join row for row. The entity rows
carry their position, so the result comes back in input order.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError
import factory.store.features._pit as _pit

if TYPE_CHECKING:
    import ray.data

__all__ = ["join", "partition_of"]

log = logging.getLogger(__name__)

_SIDE, _ROW, _AT, _PART = "__side", "__row", "__at", "__part"
_M = np.uint64(0x100000001B3)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: spreads nearby keys over all partitions."""
    h = h.copy()
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _hash_bytes(arr: pa.Array) -> np.ndarray:
    """A polynomial hash of each value's bytes (0 for null or empty), vectorized over the buffer."""
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=arr.offset + n + 1)[arr.offset :]
    lengths = np.diff(offsets)
    out = np.zeros(n, dtype=np.uint64)
    filled = np.flatnonzero(lengths > 0)
    if filled.size:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].astype(np.uint64)
        starts = offsets[:-1] - offsets[0]
        position = np.arange(len(data)) - np.repeat(starts, lengths)
        powers = np.cumprod(np.full(int(lengths.max()), _M, dtype=np.uint64)) // _M
        powers[0] = 1
        sums = np.add.reduceat((data + np.uint64(1)) * powers[position], starts[filled])
        out[filled] = sums
    out ^= lengths.astype(np.uint64)
    return out


def _hash_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type):
        values = pc.fill_null(arr.cast(pa.int64()), 0) if arr.null_count else arr.cast(pa.int64())
        return values.to_numpy(zero_copy_only=False).view(np.uint64)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type)
            or pa.types.is_large_binary(arr.type) or pa.types.is_string_view(arr.type)):
        arr = arr.cast(pa.large_string())
    return _hash_bytes(pc.fill_null(arr, "") if arr.null_count else arr)


def partition_of(table: pa.Table, entities: tuple[str, ...], partitions: int) -> np.ndarray:
    """The partition number (0..partitions-1) of each row's entity key."""
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for name in entities:
        h = _mix(h * np.uint64(31) + _hash_column(table.column(name)))
    return (h % np.uint64(partitions)).astype(np.int64)


def _tag(batch: pa.Table, *, entities: tuple[str, ...], partitions: int, schema: pa.Schema, side: int) -> pa.Table:
    """Give a batch of one side the common schema, its side and its partition number."""
    n = batch.num_rows
    columns = []
    for field in schema:
        if field.name == _SIDE:
            columns.append(pa.array(np.full(n, side, dtype=np.int8)))
        elif field.name == _PART:
            columns.append(pa.array(partition_of(batch, entities, partitions)))
        elif field.name in batch.column_names:
            columns.append(batch.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _kernel(group: pa.Table, *, spec: _pit.PitSpec, allow_backfill: bool, assume_utc: bool) -> pa.Table:
    """One partition: the in-process join of its entity rows against its feature rows."""
    side = group.column(_SIDE)
    queries = group.filter(pc.equal(side, 1)).select([*spec.entities, _AT, _ROW])
    extra = [spec.created_timestamp] if spec.created_timestamp else []
    features = group.filter(pc.equal(side, 0)).select([*spec.entities, spec.timestamp, *extra, *spec.features])
    out = _pit.join(queries, features, spec, timestamp=_AT, allow_backfill=allow_backfill, assume_utc=assume_utc)
    return out.append_column(_ROW, queries.column(_ROW))


def _wide(name: str, a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    kind_a, kind_b = _pit._kind(a), _pit._kind(b)
    if kind_a != kind_b:
        raise InvalidInputError(
            f"entity column {name!r} is {a} in the entity rows but {b} in the feature view source: "
            "cast one side so both are the same kind (e.g. both int64 or both string)"
        )
    return _pit._WIDE[kind_a]


def join(
    entity_rows: pa.Table,
    features: ray.data.Dataset,
    spec: _pit.PitSpec,
    *,
    timestamp: str = "event_timestamp",
    allow_backfill: bool = False,
    assume_utc: bool = False,
    partitions: int | None = None,
) -> pa.Table:
    """``_pit.join`` with the feature rows as a Ray Dataset, partitioned by entity across the cluster."""
    import ray
    import ray.data

    fschema = features.schema()
    fschema = pa.schema(zip(fschema.names, fschema.types, strict=True)) if not isinstance(fschema, pa.Schema) else fschema
    for name, where, names in ((timestamp, "entity rows", entity_rows.column_names),
                               *((e, "entity rows", entity_rows.column_names) for e in spec.entities)):
        if name not in names:
            raise InvalidInputError(f"the {where} have no column {name!r} (they have {', '.join(names)}): add it")
    view_columns = [*spec.entities, spec.timestamp, *([spec.created_timestamp] if spec.created_timestamp else []), *spec.features]
    missing = [c for c in view_columns if c not in fschema.names]
    if missing:
        raise InvalidInputError(f"the source of view {spec.name!r} has no column(s) {', '.join(missing)}")
    # Check times and key types up front, on empty columns, so errors come before any shuffle.
    times = [_pit.TimeColumn("entity rows", timestamp, pa.array([], entity_rows.schema.field(timestamp).type))]
    times += [_pit.TimeColumn(f"feature view {spec.name!r} source", c, pa.array([], fschema.field(c).type))
              for c in view_columns if c in (spec.timestamp, spec.created_timestamp)]
    _pit.check_times(times, assume_utc=assume_utc)
    fields = [pa.field(e, _wide(e, entity_rows.schema.field(e).type, fschema.field(e).type)) for e in spec.entities]
    fields += [pa.field(_SIDE, pa.int8()), pa.field(_PART, pa.int64()), pa.field(_ROW, pa.int64()),
               pa.field(_AT, entity_rows.schema.field(timestamp).type)]
    fields += [pa.field(c, fschema.field(c).type) for c in view_columns if c not in spec.entities]
    schema = pa.schema(fields)

    if partitions is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        partitions = max(2 * cpus, (entity_rows.num_rows + features.count()) // 2_000_000 + 1)
    queries = entity_rows.select(list(spec.entities)).append_column(_AT, entity_rows.column(timestamp))
    queries = queries.append_column(_ROW, pa.array(np.arange(entity_rows.num_rows, dtype=np.int64)))
    common = {"entities": spec.entities, "partitions": partitions, "schema": schema}
    left = ray.data.from_arrow(queries).map_batches(_tag, batch_format="pyarrow", fn_kwargs={**common, "side": 1})
    right = features.select_columns(view_columns).map_batches(
        _tag, batch_format="pyarrow", fn_kwargs={**common, "side": 0}
    )
    joined = left.union(right).groupby(_PART, num_partitions=partitions).map_groups(
        _kernel, batch_format="pyarrow",
        fn_kwargs={"spec": spec, "allow_backfill": allow_backfill, "assume_utc": assume_utc},
    )
    parts = [t for t in ray.get(joined.to_arrow_refs()) if t.num_rows]
    log.info("ray point-in-time join of %s: %d partitions", spec.name, partitions)
    if not parts:
        return _pit.take_features(pa.Table.from_arrays(
            [pa.array([], fschema.field(f).type) for f in spec.features], names=list(spec.features)
        ), spec.features, np.full(entity_rows.num_rows, -1))
    result = pa.concat_tables(parts, promote_options="permissive")
    order = np.argsort(result.column(_ROW).to_numpy())
    return result.select(list(spec.features)).take(pa.array(order))
