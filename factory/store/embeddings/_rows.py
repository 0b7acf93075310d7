"""The rows of an embedding collection: their schema, checks on what comes in, and the digest.

A collection's schema is ``id`` (string or int64), ``vector``
(``fixed_size_list<float32>[dim]``) and the metadata columns declared at creation.
Incoming rows (an Arrow table, records, a dict of columns, a DataFrame) are cast to
that schema or refused with a message naming the row or column at fault.

The collection digest is the SHA-256 of the rows' canonical digest (the datasets'
one, keyed by ``id``) together with the metric and the encoder, since the same
numbers searched by another metric, or queried through another encoder, answer
differently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from factory.errors import InvalidInputError, SchemaChangeError
from factory.store._canonical import canonical_digest, canonical_type
from factory.store._digest import PREFIX, canonical_json, is_digest
from factory.store.embeddings._encoders import EncoderRef

__all__ = [
    "ID_TYPES",
    "METRICS",
    "CollectionMeta",
    "CollectionSpec",
    "check_name",
    "check_tag",
    "coerce_rows",
    "collection_digest",
    "parse_columns",
]

METRICS = ("cosine", "l2", "dot")
ID_TYPES: dict[str, pa.DataType] = {"string": pa.string(), "int64": pa.int64()}
SPEC_KEY = b"factory.embeddings"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,99}$")
MAGIC = b"factory.embedding-collection/v1\n"
_RESERVED = {"id", "vector"}


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection fixes at creation: kept in its Lance schema metadata."""

    dim: int
    metric: str
    id_type: str
    encoder: EncoderRef | None

    def schema(self, columns: Sequence[pa.Field]) -> pa.Schema:
        fields = [
            pa.field("id", ID_TYPES[self.id_type], nullable=False),
            pa.field("vector", pa.list_(pa.field("item", pa.float32(), nullable=False), self.dim), nullable=False),
            *columns,
        ]
        return pa.schema(fields, metadata={SPEC_KEY: self.to_bytes()})

    def to_bytes(self) -> bytes:
        return canonical_json({
            "dim": self.dim,
            "metric": self.metric,
            "id_type": self.id_type,
            "encoder": self.encoder.to_json() if self.encoder else None,
        })

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> CollectionSpec:
        raw = (schema.metadata or {}).get(SPEC_KEY)
        if raw is None:
            raise InvalidInputError("this Lance dataset is not an embedding collection (no factory.embeddings metadata)")
        value = json.loads(raw)
        return cls(int(value["dim"]), value["metric"], value["id_type"], EncoderRef.from_json(value["encoder"]))


class CollectionMeta(BaseModel):
    """The metadata of an ``embedding-collection`` artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    collection: str
    lance_version: int
    dim: int
    metric: Literal["cosine", "l2", "dot"]
    id_type: Literal["string", "int64"]
    count: int
    rows_digest: str
    columns: list[tuple[str, str]]
    encoder: dict[str, Any] | None = None
    index: dict[str, Any] | None = None
    operation: str


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{name!r} is not a valid collection name: use letters, digits, '.', '_' and '-' (no '/'), up to 100"
        )
    return name


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or is_digest(tag):
        raise InvalidInputError(
            f"{tag!r} is not a valid tag: start with a letter, then letters, digits, '.', '_' or '-'"
        )
    return tag


def metadata_fields(schema: pa.Schema) -> list[pa.Field]:
    return [f for f in schema if f.name not in _RESERVED]


def parse_columns(columns: Mapping[str, str | pa.DataType] | pa.Schema | None) -> list[pa.Field]:
    """Metadata columns as Arrow fields, from a schema or a {name: type or type name} mapping."""
    if columns is None:
        return []
    items = [(f.name, f.type) for f in columns] if isinstance(columns, pa.Schema) else list(columns.items())
    fields = []
    for name, kind in items:
        if not isinstance(name, str) or not name or name.startswith("_") or name in _RESERVED:
            raise InvalidInputError(
                f"{name!r} cannot name a metadata column: 'id', 'vector' and names starting with '_' are reserved"
            )
        if isinstance(kind, str):
            try:
                kind = pa.type_for_alias(kind)
            except (ValueError, KeyError) as exc:
                raise InvalidInputError(
                    f"column {name!r}: {kind!r} is not an Arrow type name: use e.g. 'string', 'int64', "
                    "'float64', 'bool', 'timestamp[us]', or pass a pyarrow type"
                ) from exc
        fields.append(pa.field(name, canonical_type(kind, name)))
    return fields


def _to_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, Mapping):
        columns = {}
        for name, values in data.items():
            if isinstance(values, np.ndarray) and values.ndim == 2:
                values = pa.FixedSizeListArray.from_arrays(pa.array(values.astype(np.float32).ravel()), values.shape[1])
            columns[name] = values
        return pa.table(columns)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        rows = list(data)
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise InvalidInputError("records must be mappings like {'id': ..., 'vector': [...], 'title': ...}")
        return pa.Table.from_pylist([{k: _plain(v) for k, v in r.items()} for r in rows])
    if type(data).__name__ == "DataFrame":
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InvalidInputError(
        f"cannot read rows from {type(data).__name__}: give a pyarrow Table, a list of records, "
        "a dict of columns or a pandas DataFrame"
    )


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def coerce_rows(
    data: Any,
    schema: pa.Schema,
    spec: CollectionSpec,
    *,
    encode: Callable[[list[str]], np.ndarray] | None = None,
    text_column: str = "text",
    partial: bool = False,
) -> pa.Table:
    """``data`` cast to the collection's schema (``partial``: id plus any subset of columns).

    Without a ``vector`` column, ``encode`` turns ``text_column`` into vectors; the text
    is kept only if the collection declares it as a column.
    """
    table = _to_table(data)
    names = table.column_names
    if "id" not in names:
        raise InvalidInputError(f"the rows have no 'id' column (columns: {', '.join(names) or 'none'}): add one")
    declared = {f.name: f for f in schema}
    if "vector" not in names and text_column in names and encode is not None:
        texts = table.column(text_column)
        if texts.null_count:
            raise InvalidInputError(f"column {text_column!r} has {texts.null_count} null texts: give every row a text")
        vectors = encode([str(t) for t in texts.to_pylist()])
        table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), spec.dim))
        if text_column not in declared:
            table = table.drop_columns([text_column])
        names = table.column_names
    extra = [n for n in names if n not in declared]
    if extra:
        raise SchemaChangeError(
            f"column(s) {', '.join(map(repr, extra))} are not in the collection "
            f"(it has {', '.join(declared)}): declare metadata columns when you create the collection"
        )
    if not partial and "vector" not in names:
        raise InvalidInputError("the rows have no 'vector' column: add vectors, or texts with an encoder")
    if table.num_rows == 0:
        raise InvalidInputError("no rows given: pass at least one row")
    columns, fields = [], []
    for field in schema:
        if field.name in names:
            column = _cast(table.column(field.name), field)
        elif partial:
            continue
        else:
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
        fields.append(field)
    out = pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))
    _check_ids(out.column("id"))
    if "vector" in out.column_names:
        check_vectors(out.column("vector"), spec, out.column("id"))
    return out


def _cast(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    if column.type == field.type:
        return column
    if field.name == "vector":
        if pa.types.is_fixed_size_list(column.type) and column.type.list_size != field.type.list_size:
            raise InvalidInputError(
                f"vectors have {column.type.list_size} dimensions but the collection has {field.type.list_size}: "
                "encode with the collection's encoder or create a new collection"
            )
        try:
            return column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            lengths = pc.list_value_length(column) if pa.types.is_list(column.type) else None
            if lengths is not None:
                wrong = pc.not_equal(lengths, field.type.list_size)
                bad = pc.indices_nonzero(pc.fill_null(wrong, False).combine_chunks())
                if len(bad):
                    i = bad[0].as_py()
                    raise InvalidInputError(
                        f"row {i} has a vector of {lengths[i].as_py()} dimensions, not {field.type.list_size}: "
                        "every vector must have the collection's dimension"
                    ) from exc
            raise InvalidInputError(f"the 'vector' column ({column.type}) cannot be read as float32 vectors: {exc}") from exc
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInputError(f"column {field.name!r} ({column.type}) cannot be stored as {field.type}: {exc}") from exc


def _check_ids(ids: pa.ChunkedArray) -> None:
    if ids.null_count:
        raise InvalidInputError(f"{ids.null_count} row(s) have no id: give every row an id")
    counts = pc.value_counts(ids.combine_chunks())
    dup = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(dup):
        raise InvalidInputError(f"id(s) {_some(dup)} appear more than once in the rows given: give each row its own id")


def check_vectors(vectors: pa.ChunkedArray, spec: CollectionSpec, ids: pa.ChunkedArray | None = None) -> None:
    """Refuse null, NaN or infinite vectors, and zero vectors under cosine."""
    if vectors.null_count:
        raise InvalidInputError(f"{vectors.null_count} row(s) have no vector: give every row a vector")
    matrix = vectors.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), spec.dim)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InvalidInputError(
            f"{len(bad)} vector(s) hold NaN or infinite values (id(s) {_some(_ids_at(ids, bad))}): fix or drop them"
        )
    if spec.metric == "cosine":
        zero = np.flatnonzero(~matrix.any(axis=1))
        if len(zero):
            raise InvalidInputError(
                f"{len(zero)} vector(s) are all zeros (id(s) {_some(_ids_at(ids, zero))}), which have no direction "
                "under the cosine metric: drop them or use metric='l2'"
            )


def _ids_at(ids: pa.ChunkedArray | None, positions: np.ndarray) -> pa.Array:
    if ids is None:
        return pa.array(positions[:5])
    return ids.combine_chunks().take(pa.array(positions[:5]))


def _some(values: pa.Array, limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values.slice(0, limit).to_pylist())
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def rows_digest(table: pa.Table) -> str:
    """The canonical digest of a collection's rows (the datasets' digest, keyed by id)."""
    return canonical_digest(table.replace_schema_metadata(None), key=("id",))


def collection_digest(rows: str, spec: CollectionSpec) -> str:
    """A collection version's identity: its rows, and how they are searched."""
    header = {"rows": rows, "metric": spec.metric, "encoder": spec.encoder.to_json() if spec.encoder else None}
    return PREFIX + hashlib.sha256(MAGIC + canonical_json(header)).hexdigest()
