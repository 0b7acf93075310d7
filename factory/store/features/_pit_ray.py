"""The point-in-time join on Ray Data, for inputs larger than one process's memory.

A view small enough to hold whole (``BROADCAST_ROWS``, ``BROADCAST_BYTES``) is gathered
once into one table in the object store, and each batch of entity rows is joined
against it where the batch is: no shuffle, one pass over the entity rows. A larger view
is shuffled with the entity rows: both sides are tagged with a partition number (a hash
of the entity key, equal for equal keys whatever their integer width or string layout),
unioned into one dataset, and hash-repartitioned on it, so each partition holds every
entity row and every feature row of its entities. Either way the in-process kernel
(``_pit.join``) sees every view row of the entities it joins; since the rule depends
only on an entity's own rows and their content (ties are broken by content, never by
position), the result equals the in-process join row for row.

``join_dataset`` takes the entity rows as a Ray Dataset and returns one: the entity
rows travel through the join with all their columns, so nothing is collected in the
driver (``FeatureStore.get_historical_features`` then records the result with
``DatasetStore.add_ray``). ``join`` takes them as a table and returns the features in
input order (each row carries its position through the join).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError
import factory.store.features._pit as _pit

if TYPE_CHECKING:
    import ray.data

__all__ = ["BROADCAST_BYTES", "BROADCAST_ROWS", "Plan", "broadcasts", "join", "join_dataset", "partition_of"]

log = logging.getLogger(__name__)

_SIDE, _ROW, _PART = "__side", "__row", "__part"
# Prefixes of the entity rows' and the view's non-key columns in the shuffle, so that
# columns of the same name on both sides never meet.
_Q, _F = "__q.", "__f."
_M = np.uint64(0x100000001B3)
# A view of up to this many rows, and about this many bytes, is handed whole to every batch
# of entity rows (a broadcast join: no shuffle); a larger one is hash-partitioned with the
# entity rows. Two million rows is also the share of one partition of the shuffle.
BROADCAST_ROWS = 2_000_000
BROADCAST_BYTES = 128 * 2**20
# Entity rows per call of the kernel on the broadcast path: each call sorts the view once, so
# small blocks are bundled into batches of about this size.
_BROADCAST_BATCH = 1 << 20


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


@dataclass(frozen=True)
class Plan:
    """What both sides of a join become in the shuffle, and what comes out (pure: no Ray)."""

    spec: _pit.PitSpec
    timestamp: str
    entity_schema: pa.Schema
    view_columns: tuple[str, ...]
    shuffled: pa.Schema
    output: pa.Schema

    @classmethod
    def make(cls, spec: _pit.PitSpec, entity_schema: pa.Schema, view_schema: pa.Schema, *, timestamp: str,
             assume_utc: bool, names: dict[str, str] | None = None) -> Plan:
        """Check both sides (columns, times, key types) before anything runs, and lay out the shuffle.

        ``names``: feature -> output column (default: the feature's own name).
        """
        eschema, fschema = entity_schema, view_schema
        names = {f: (names or {}).get(f, f) for f in spec.features}
        for column in (timestamp, *spec.entities):
            if column not in eschema.names:
                raise InvalidInputError(
                    f"the entity rows have no column {column!r} (they have {', '.join(eschema.names)}): add it"
                )
        view_columns = (*spec.entities, spec.timestamp, *([spec.created_timestamp] if spec.created_timestamp else []),
                        *spec.features)
        missing = [c for c in view_columns if c not in fschema.names]
        if missing:
            raise InvalidInputError(f"the source of view {spec.name!r} has no column(s) {', '.join(missing)}")
        clash = sorted(set(eschema.names) & set(names.values()))
        if clash:
            raise InvalidInputError(f"the entity rows already have column(s) {', '.join(clash)}: rename them")
        times = [_pit.TimeColumn("entity rows", timestamp, pa.array([], eschema.field(timestamp).type))]
        times += [_pit.TimeColumn(f"feature view {spec.name!r} source", c, pa.array([], fschema.field(c).type))
                  for c in (spec.timestamp, spec.created_timestamp) if c]
        _pit.check_times(times, assume_utc=assume_utc)
        fields = [pa.field(e, _wide(e, eschema.field(e).type, fschema.field(e).type)) for e in spec.entities]
        fields += [pa.field(_SIDE, pa.int8()), pa.field(_PART, pa.int64())]
        fields += [pa.field(_Q + f.name, f.type) for f in eschema if f.name not in spec.entities]
        fields += [pa.field(_F + c, fschema.field(c).type) for c in view_columns if c not in spec.entities]
        output = pa.schema([*eschema, *(pa.field(names[f], fschema.field(f).type) for f in spec.features)])
        return cls(spec, timestamp, eschema, view_columns, pa.schema(fields), output)

    def tag(self, batch: pa.Table, *, side: int, partitions: int) -> pa.Table:
        """A batch of one side (1: entity rows, 0: view rows) in the shuffle's schema, with its partitions."""
        prefix = _Q if side == 1 else _F
        present = {c if c in self.spec.entities else prefix + c: c for c in batch.column_names}
        n = batch.num_rows
        columns = []
        for field in self.shuffled:
            if field.name == _SIDE:
                columns.append(pa.array(np.full(n, side, dtype=np.int8)))
            elif field.name == _PART:
                parts = partition_of(batch, self.spec.entities, partitions) if n else np.zeros(0, np.int64)
                columns.append(pa.array(parts))
            elif field.name in present:
                columns.append(batch.column(present[field.name]).cast(field.type))
            else:
                columns.append(pa.nulls(n, field.type))
        return pa.Table.from_arrays(columns, schema=self.shuffled)

    def kernel(self, part: pa.Table, *, allow_backfill: bool, assume_utc: bool) -> pa.Table:
        """One partition (every row of its entities, from both sides): its entity rows with their features."""
        spec = self.spec
        if part.num_rows == 0 or _SIDE not in part.column_names:
            return self.output.empty_table()
        side = part.column(_SIDE)
        queries = part.filter(pc.equal(side, 1))
        if queries.num_rows == 0:
            return self.output.empty_table()
        view = self.view_columns[len(spec.entities):]
        features = part.filter(pc.equal(side, 0))
        features = features.select([*spec.entities, *(_F + c for c in view)]).rename_columns(list(self.view_columns))
        names = self.entity_schema.names
        queries = queries.select([c if c in spec.entities else _Q + c for c in names]).rename_columns(names)
        return self.match(queries, features, allow_backfill=allow_backfill, assume_utc=assume_utc)

    def view_table(self, tables: Sequence[pa.Table]) -> pa.Table:
        """The view's rows (blocks of its source) as the kernel sees them: its columns, the keys widened."""
        types = [self.shuffled.field(c if c in self.spec.entities else _F + c).type for c in self.view_columns]
        schema = pa.schema([pa.field(c, t) for c, t in zip(self.view_columns, types, strict=True)])
        parts = [pa.Table.from_arrays([t.column(c).cast(schema.field(c).type) for c in self.view_columns], schema=schema)
                 for t in tables if t.num_rows]
        return pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()

    def match(self, rows: pa.Table, features: pa.Table, *, allow_backfill: bool, assume_utc: bool) -> pa.Table:
        """Entity rows (their own columns) with their features from ``features`` (``view_table``'s layout).

        ``features`` must hold every row of the entities of ``rows``; other entities' rows
        change nothing, so it may be the whole view.
        """
        spec = self.spec
        keys = [rows.column(e).cast(self.shuffled.field(e).type) for e in spec.entities]
        at = rows.column(self.timestamp).cast(self.entity_schema.field(self.timestamp).type)
        queries = pa.Table.from_arrays([*keys, at], names=[*spec.entities, self.timestamp])
        joined = _pit.join(queries, features, spec, timestamp=self.timestamp, allow_backfill=allow_backfill,
                           assume_utc=assume_utc)
        columns = [rows.column(f.name).cast(f.type) for f in self.entity_schema]
        columns += [joined.column(f) for f in spec.features]
        return pa.Table.from_arrays(columns, schema=self.output)


def broadcasts(view_rows: int, columns: pa.Schema) -> bool:
    """Whether a view of ``view_rows`` rows of ``columns`` is joined without a shuffle (see ``join_dataset``)."""
    width = sum(max(f.type.bit_width // 8, 1) if pa.types.is_primitive(f.type) else 32 for f in columns)
    return view_rows <= BROADCAST_ROWS and view_rows * width <= BROADCAST_BYTES


def _unmatched(batch: pa.Table, *, plan: Plan) -> pa.Table:
    """Entity rows against a view without rows: every feature null."""
    if batch.num_rows == 0:  # an empty input comes as one block without columns
        return plan.output.empty_table()
    columns = [batch.column(c).cast(plan.entity_schema.field(c).type) for c in plan.entity_schema.names]
    columns += [pa.nulls(batch.num_rows, f.type) for f in list(plan.output)[len(columns):]]
    return pa.Table.from_arrays(columns, schema=plan.output)


def _gather(plan: Plan, *tables: pa.Table) -> pa.Table:
    """On a worker: the view's blocks as one table in the kernel's layout."""
    return plan.view_table(tables)


def _broadcast(batch: pa.Table, *, plan: Plan, view: list, allow_backfill: bool, assume_utc: bool) -> pa.Table:
    """On a worker: a batch of entity rows joined against the whole view (held in the object store)."""
    import ray

    if batch.num_rows == 0:  # an empty input comes as one block without columns
        return plan.output.empty_table()
    return plan.match(batch, ray.get(view[0]), allow_backfill=allow_backfill, assume_utc=assume_utc)


def _tag(batch: pa.Table, *, plan: Plan, side: int, partitions: int) -> pa.Table:
    return plan.tag(batch, side=side, partitions=partitions)


def _kernel(part: pa.Table, *, plan: Plan, allow_backfill: bool, assume_utc: bool) -> pa.Table:
    return plan.kernel(part, allow_backfill=allow_backfill, assume_utc=assume_utc)


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


def _arrow_schema(dataset: ray.data.Dataset) -> pa.Schema:
    from factory.store.datasets._streamed import arrow_schema

    return arrow_schema(dataset)


def join_dataset(
    entity_rows: ray.data.Dataset,
    features: ray.data.Dataset,
    spec: _pit.PitSpec,
    *,
    timestamp: str = "event_timestamp",
    allow_backfill: bool = False,
    assume_utc: bool = False,
    names: dict[str, str] | None = None,
    entity_schema: pa.Schema | None = None,
    view_schema: pa.Schema | None = None,
    num_rows: int | None = None,
    view_rows: int | None = None,
    partitions: int | None = None,
) -> tuple[ray.data.Dataset, pa.Schema]:
    """The point-in-time join of one view, on the cluster: every entity row (any order) with its features.

    Returns the joined rows, lazily, and their schema: the entity rows' columns, then
    ``spec.features`` under ``names`` (feature -> output name; default their own names).
    Nothing is collected in the driver, and bad input is refused before anything runs.
    ``entity_schema``, ``num_rows`` and ``view_rows`` (the entity rows' schema and count,
    the view's count) spare running either side to learn them, which matters when the
    entity rows are themselves a join; ``view_schema`` gives the view's, which an empty Ray
    Dataset does not know.

    A view of up to ``BROADCAST_ROWS`` rows (and about ``BROADCAST_BYTES``) is gathered into one table in the object store
    and every batch of entity rows is joined against it where it is (no shuffle, and the
    entity rows are never counted). A larger view, or any view when ``partitions`` is
    given, is hash-partitioned with the entity rows into ``partitions`` partitions: by
    default two per CPU, or more so that each holds about two million rows.
    """
    import ray

    view_schema = view_schema or _arrow_schema(features)
    plan = Plan.make(spec, entity_schema or _arrow_schema(entity_rows), view_schema, timestamp=timestamp,
                     assume_utc=assume_utc, names=names)
    view_rows = features.count() if view_rows is None else view_rows
    if view_rows == 0:
        return entity_rows.map_batches(_unmatched, batch_format="pyarrow", fn_kwargs={"plan": plan}), plan.output
    options = {"plan": plan, "allow_backfill": allow_backfill, "assume_utc": assume_utc}
    if partitions is None and broadcasts(view_rows, pa.schema([view_schema.field(c) for c in plan.view_columns])):
        # The view's blocks go to one task that lays them out once; the driver holds only references.
        blocks = features.select_columns(list(plan.view_columns)).to_arrow_refs()
        view = ray.remote(_gather).options(num_cpus=0.5).remote(plan, *blocks)
        log.info("ray point-in-time join of %s: the view's %d rows broadcast", spec.name, view_rows)
        joined = entity_rows.map_batches(_broadcast, batch_format="pyarrow", batch_size=_BROADCAST_BATCH,
                                         fn_kwargs={**options, "view": [view]})
        return joined, plan.output
    rows = entity_rows.count() if num_rows is None else num_rows
    # Ray hands over an empty input as one block without columns, which a shuffle cannot
    # concatenate with the other side's blocks: an empty side needs no shuffle anyway.
    if rows == 0:
        return ray.data.from_arrow(plan.output.empty_table()), plan.output
    if partitions is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        partitions = max(2 * cpus, (rows + view_rows) // 2_000_000 + 1)
    left = entity_rows.map_batches(_tag, batch_format="pyarrow",
                                   fn_kwargs={"plan": plan, "side": 1, "partitions": partitions})
    right = features.select_columns(list(plan.view_columns)).map_batches(
        _tag, batch_format="pyarrow", fn_kwargs={"plan": plan, "side": 0, "partitions": partitions})
    log.info("ray point-in-time join of %s: %d partitions", spec.name, partitions)
    # A hash repartition hands each partition over whole, as one block (Ray never splits
    # them), so every entity's rows from both sides meet in one call of the kernel.
    joined = left.union(right).repartition(partitions, keys=[_PART]).map_batches(
        _kernel, batch_format="pyarrow", batch_size=None, fn_kwargs=options,
    )
    return joined, plan.output


def join(
    entity_rows: pa.Table,
    features: ray.data.Dataset,
    spec: _pit.PitSpec,
    *,
    timestamp: str = "event_timestamp",
    allow_backfill: bool = False,
    assume_utc: bool = False,
    view_schema: pa.Schema | None = None,
    view_rows: int | None = None,
    partitions: int | None = None,
) -> pa.Table:
    """``_pit.join`` with the feature rows as a Ray Dataset: the features of each entity row, in order."""
    import ray
    import ray.data

    missing = [c for c in (timestamp, *spec.entities) if c not in entity_rows.column_names]
    if missing:
        raise InvalidInputError(f"the entity rows have no column(s) {', '.join(missing)} "
                                f"(they have {', '.join(entity_rows.column_names)}): add them")
    queries = entity_rows.select([*spec.entities, timestamp])
    queries = queries.append_column(_ROW, pa.array(np.arange(entity_rows.num_rows, dtype=np.int64)))
    view_schema = view_schema or _arrow_schema(features)
    plan = Plan.make(spec, queries.schema, view_schema, timestamp=timestamp, assume_utc=assume_utc)
    if queries.num_rows == 0:
        return plan.output.empty_table().select(list(spec.features))
    joined, _ = join_dataset(ray.data.from_arrow(queries), features, spec, timestamp=timestamp,
                             allow_backfill=allow_backfill, assume_utc=assume_utc, entity_schema=queries.schema,
                             view_schema=view_schema, num_rows=queries.num_rows, view_rows=view_rows,
                             partitions=partitions)
    result = pa.concat_tables([t for t in ray.get(joined.to_arrow_refs()) if t.num_rows])
    order = np.argsort(result.column(_ROW).to_numpy())
    return result.select(list(spec.features)).take(pa.array(order))
