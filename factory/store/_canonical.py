"""The canonical content of a table, and its digest: a dataset version's identity.

The digest is ``"sha256:" + SHA-256(stream)`` where ``stream`` is the byte string below.
It depends only on the rows (as a multiset), their column names and logical types, and
the declared key, never on row order, column order, file format or chunking.

**Normalized types.** Physical variants of one logical type are merged and everything
else is kept: ``large_string``/``string_view`` -> ``string``, ``large_binary``/
``binary_view`` -> ``binary``, ``large_list``/``list_view`` -> ``list`` (child field named
``item``, nullable), ``dictionary<V>`` -> ``V``; all fields nullable; schema and field
metadata dropped. ``int32`` stays distinct from ``int64``, ``date32`` from ``date64``, and
a timestamp's unit and time zone are part of its type. Supported: null, bool, (u)int8-64,
float16/32/64, decimal32-256, date32/64, time32/64, timestamp, duration, string, binary,
fixed_size_binary, and ``list``/``fixed_size_list`` of supported types (nested too).
Anything else (struct, map, union, interval, extension) raises ``InvalidInputError``.

**Row order.** Rows are sorted ascending by the key columns in the declared order, then by
every other column in name order (with no key: every column in name order), so the
order is total: rows that tie on every column are byte-identical. Values compare as
numbers (ints, decimals, dates, times, timestamps, durations; false < true), bytewise
(string, binary, fixed_size_binary), floats by IEEE-754 total order of their bits
(-NaN < -inf < ... < -0.0 < +0.0 < ... < +inf < NaN), lists element by element (by the
rank of each element among all elements of that column; a prefix sorts first); nulls last.

**Floats.** ``-0.0`` and ``+0.0`` are different values (different bits, so a change of
sign is a change of content, and what is read back is bit-exact). Every NaN is replaced by
the one canonical quiet NaN (``0x7e00``, ``0x7fc00000``, ``0x7ff8000000000000``), since
NaN payloads do not survive CSV or most tools.

**Stream.** ``b"factory.dataset.canonical/v1\\n"``, then the canonical JSON (sorted keys,
no spaces, UTF-8) of ``{"columns": [[name, type], ...], "key": [...], "rows": n}`` with
columns sorted by name (Unicode code point order) and ``type`` Arrow's string for the
normalized type, then ``b"\\n"``, then each column in name order, encoded in the sorted row
order as:

- validity: one byte per row, 1 valid, 0 null;
- ``null``: nothing more;
- ``bool``: one byte per row, 1 true, 0 false or null;
- other fixed-width types: each row's value in little-endian bytes (its byte width, e.g.
  16 for decimal128), all zero bytes for a null;
- ``string``/``binary``: each row's byte length as int64 little-endian (0 for null), then
  the concatenated bytes of all rows;
- ``list``/``fixed_size_list``: each row's element count as int64 little-endian (0 for
  null), then the encoding (validity and values, as above) of all rows' elements
  concatenated, as one column.

The row count in the header and the lengths make the stream parse one way only, so two
different tables cannot produce the same stream. Everything is computed with Arrow
compute and numpy over whole buffers; no Python loop runs per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError
from factory.store._digest import PREFIX, canonical_json

__all__ = [
    "canonical_digest",
    "canonical_order",
    "canonical_type",
    "check_key",
    "digest_from_batches",
    "encoding_part",
    "encoding_parts",
    "multiset_diff",
    "normalize_table",
    "occurrence",
    "row_classes",
    "sorted_digest",
]

MAGIC = b"factory.dataset.canonical/v1\n"

_FLOATS = {16: (np.float16, np.uint16), 32: (np.float32, np.uint32), 64: (np.float64, np.uint64)}
_CANONICAL_NAN = {16: np.uint16(0x7E00), 32: np.uint32(0x7FC00000), 64: np.uint64(0x7FF8000000000000)}


def _scalar_supported(t: pa.DataType) -> bool:
    return (
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_duration(t)
        or pa.types.is_fixed_size_binary(t)
    )


def canonical_type(t: pa.DataType, column: str = "?") -> pa.DataType:
    """The normalized form of ``t`` (see the module docstring), or ``InvalidInputError``."""
    if pa.types.is_dictionary(t):
        return canonical_type(t.value_type, column)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_fixed_size_list(t):
        return pa.list_(pa.field("item", canonical_type(t.value_type, column)), t.list_size)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        return pa.list_(pa.field("item", canonical_type(t.value_type, column)))
    if _scalar_supported(t) and not isinstance(t, pa.ExtensionType):
        return t
    raise InvalidInputError(
        f"column {column!r} has type {t}, which datasets do not support: convert it to a number, "
        "bool, string, binary, date, time, timestamp, decimal or a list of those"
    )


def normalize_table(table: pa.Table) -> pa.Table:
    """``table`` with normalized types, nullable fields and no metadata (columns kept in order)."""
    names = table.column_names
    if not names:
        raise InvalidInputError("the table has no columns: give a table with at least one column")
    seen: set[str] = set()
    for name in names:
        if not name or not name.strip():
            raise InvalidInputError("the table has a column with an empty name: name every column")
        if name in seen:
            raise InvalidInputError(f"the table has two columns named {name!r}: rename one of them")
        seen.add(name)
    fields, columns = [], []
    for name, column in zip(names, table.columns, strict=True):
        target = canonical_type(column.type, name)
        if column.type != target:
            try:
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(
                    f"column {name!r} of type {column.type} cannot be read as {target}: {exc}"
                ) from exc
        fields.append(pa.field(name, target, nullable=True))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def check_key(table: pa.Table, key: Sequence[str]) -> tuple[str, ...]:
    """``key`` as a tuple, once every column in it is known to be in ``table``."""
    if isinstance(key, str):
        key = (key,)
    key = tuple(key)
    missing = [k for k in key if k not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"key column(s) {', '.join(map(repr, missing))} are not in the table: "
            f"choose among {', '.join(table.column_names)}"
        )
    if len(set(key)) != len(key):
        raise InvalidInputError(f"the key {list(key)} names a column twice: give each key column once")
    return key


def _valid(arr: pa.Array) -> np.ndarray:
    """One bool per row: True where the value is present."""
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.bool_)
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=np.bool_)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _fixed_values(arr: pa.Array, valid: np.ndarray) -> np.ndarray:
    """The values buffer of a fixed-width array as an (n, width) uint8 matrix, canonicalized."""
    width = arr.type.bit_width // 8
    n, offset = len(arr), arr.offset
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8, count=(offset + n) * width)[offset * width :]
    if pa.types.is_floating(arr.type):
        bits = _float_bits(raw, arr.type.bit_width)
        if not valid.all():
            bits[~valid] = 0
        return bits.view(np.uint8).reshape(n, width)
    matrix = raw.reshape(n, width)
    if not valid.all():
        matrix = matrix.copy()
        matrix[~valid] = 0
    return matrix


def _float_bits(raw: np.ndarray, bit_width: int) -> np.ndarray:
    """Float bits as unsigned ints with every NaN replaced by the canonical quiet NaN (a copy)."""
    ftype, utype = _FLOATS[bit_width]
    values = raw.view(ftype)
    bits = values.view(utype).copy()
    nan = np.isnan(values)
    if nan.any():
        bits[nan] = _CANONICAL_NAN[bit_width]
    return bits


def _lengths(arr: pa.Array) -> np.ndarray:
    """Each row's element count (0 for null) as int64."""
    lengths = pc.list_value_length(arr)
    if lengths.null_count:
        lengths = pc.fill_null(lengths, 0)
    return lengths.to_numpy(zero_copy_only=False).astype("<i8", copy=False)


def _feed(arr: pa.Array, h: hashlib._Hash) -> None:
    """Append the canonical encoding of one contiguous column to the hash."""
    for part in range(encoding_parts(arr.type)):
        h.update(encoding_part(arr, part))


def encoding_parts(t: pa.DataType) -> int:
    """How many consecutive parts a column of type ``t`` encodes to (validity, then values...).

    A column's encoding is its parts in order, and part ``i`` of a column split into
    pieces is part ``i`` of each piece, concatenated: so a column too big for memory is
    hashed by reading it once per part (see ``digest_from_batches``).
    """
    if pa.types.is_null(t):
        return 1
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return 3
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return 2 + encoding_parts(t.value_type)
    return 2


def encoding_part(arr: pa.Array, part: int) -> bytes | memoryview | np.ndarray:
    """Part ``part`` of the canonical encoding of one contiguous column (see the module docstring)."""
    t = arr.type
    if part == 0:
        return _valid(arr).view(np.uint8)
    if len(arr) == 0:
        return b""
    if pa.types.is_boolean(t):
        filled = pc.fill_null(arr, False) if arr.null_count else arr
        return filled.to_numpy(zero_copy_only=False).view(np.uint8)
    if pa.types.is_string(t) or pa.types.is_binary(t):
        filled = pc.fill_null(arr, pa.scalar(b"" if pa.types.is_binary(t) else "", t)) if arr.null_count else arr
        n, offset = len(filled), filled.offset
        offsets = np.frombuffer(filled.buffers()[1], dtype=np.int32, count=offset + n + 1)[offset:]
        if part == 1:
            return np.diff(offsets).astype("<i8")
        data = filled.buffers()[2]
        if data is None or offsets[-1] == offsets[0]:
            return b""
        return memoryview(data)[offsets[0] : offsets[-1]]
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return _lengths(arr) if part == 1 else encoding_part(arr.flatten(), part - 2)
    return np.ascontiguousarray(_fixed_values(arr, _valid(arr)))


def _sortable(arr: pa.Array) -> pa.Array | None:
    """A column that Arrow can sort whose order and equality match the canonical ones.

    None for a column of nulls (every row ties on it).
    """
    t = arr.type
    if pa.types.is_null(t):
        return None
    if pa.types.is_floating(t):
        width = t.bit_width
        _, utype = _FLOATS[width]
        if len(arr) == 0:
            return pa.array(np.zeros(0, dtype=utype))
        valid = _valid(arr)
        raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8, count=(arr.offset + len(arr)) * width // 8)
        bits = _float_bits(raw[arr.offset * width // 8 :], width)
        sign = utype(1) << utype(width - 1)
        # Flip negatives entirely and set the sign bit of positives: unsigned order == float total order.
        key = np.where(bits & sign, ~bits, bits | sign)
        return pa.array(key, mask=None if valid.all() else ~valid)
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        values = arr.flatten()
        child = _sortable(values)
        if child is None:
            ranks = np.ones(len(values), dtype=np.uint64)
        else:
            ranks = pc.rank(child, sort_keys="ascending", tiebreaker="dense").to_numpy()
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(_lengths(arr) * 8, out=offsets[1:])
        # Big-endian ranks make bytewise order equal element-by-element order.
        data = pa.py_buffer(ranks.astype(">u8").tobytes())
        out = pa.Array.from_buffers(pa.large_binary(), len(arr), [None, pa.py_buffer(offsets), data])
        if arr.null_count:
            out = pc.if_else(arr.is_valid(), out, pa.scalar(None, pa.large_binary()))
        return out
    return arr


def _order_columns(table: pa.Table, key: Sequence[str]) -> list[str]:
    key = tuple(key)
    return list(key) + sorted(c for c in table.column_names if c not in key)


def _sortable_table(table: pa.Table, names: Sequence[str]) -> tuple[pa.Table, list[str]]:
    arrays, kept = [], []
    for name in names:
        rep = _sortable(table.column(name).combine_chunks())
        if rep is not None:
            arrays.append(rep)
            kept.append(name)
    return pa.Table.from_arrays(arrays, names=kept), kept


def canonical_order(table: pa.Table, key: Sequence[str] = ()) -> pa.Array:
    """Indices that put a normalized table's rows in canonical order."""
    if table.num_rows <= 1:
        return pa.array(np.arange(table.num_rows, dtype=np.uint64))
    columns = _order_columns(table, key)
    first = _sortable(table.column(columns[0]).combine_chunks())
    if first is not None and first.null_count == 0:
        # A unique leading column (the usual key) decides the order alone; sorting one
        # array is about twice as fast as Arrow's multi-key table sort (measured, 10 M rows).
        if _strictly_increasing(first):
            return pa.array(np.arange(table.num_rows, dtype=np.uint64))
        indices = pc.sort_indices(first)
        if _strictly_increasing(first.take(indices)):
            return indices
    reps, names = _sortable_table(table, columns)
    if not names:
        return pa.array(np.arange(table.num_rows, dtype=np.uint64))
    return pc.sort_indices(reps, sort_keys=[(n, "ascending", "at_end") for n in names])


def _strictly_increasing(column: pa.Array) -> bool:
    return bool(pc.all(pc.greater(column.slice(1), column.slice(0, len(column) - 1))).as_py())


def sorted_digest(table: pa.Table, key: Sequence[str] = ()) -> str:
    """The digest of a normalized table whose rows are already in canonical order."""
    return digest_from_batches(table.schema, key, table.num_rows, lambda name: [table.column(name).combine_chunks()])


def digest_from_batches(
    schema: pa.Schema, key: Sequence[str], num_rows: int, column: Callable[[str], Iterable[pa.Array]]
) -> str:
    """``sorted_digest`` of rows that need not fit in memory.

    ``column(name)`` yields the normalized column's values in canonical row order, in
    contiguous pieces of any size; it is called once per part of the column's encoding
    (``encoding_parts``), so memory holds one piece at a time.
    """
    names = sorted(schema.names)
    header = {"columns": [[n, str(schema.field(n).type)] for n in names], "key": list(key), "rows": num_rows}
    h = hashlib.sha256(MAGIC)
    h.update(canonical_json(header) + b"\n")
    for name in names:
        for part in range(encoding_parts(schema.field(name).type)):
            for piece in column(name):
                h.update(encoding_part(piece, part))
    return PREFIX + h.hexdigest()


def canonical_digest(table: pa.Table, key: Sequence[str] = ()) -> str:
    """The SHA-256 of ``table``'s canonical content (see the module docstring)."""
    table = normalize_table(table)
    key = check_key(table, key)
    return sorted_digest(table.take(canonical_order(table, key)), key)


def row_classes(table: pa.Table) -> np.ndarray:
    """One int64 per row of a normalized table; equal exactly where rows are canonically equal."""
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    reps, names = _sortable_table(table, sorted(table.column_names))
    if not names:
        return np.zeros(n, dtype=np.int64)
    order = pc.sort_indices(reps, sort_keys=[(c, "ascending", "at_end") for c in names]).to_numpy()
    ranked = reps.take(order)
    new_class = np.zeros(n, dtype=np.bool_)
    new_class[0] = True
    for name in names:
        column = ranked.column(name).combine_chunks()
        new_class[1:] |= _differs_from_previous(column)
    classes = np.empty(n, dtype=np.int64)
    classes[order] = np.cumsum(new_class) - 1
    return classes


def _differs_from_previous(column: pa.Array) -> np.ndarray:
    """For rows 1..n-1: does the value differ from the row before it (null equals null)?"""
    current, before = column.slice(1), column.slice(0, len(column) - 1)
    differs = pc.not_equal(current, before)
    if column.null_count:
        one_null = pc.xor(current.is_null(), before.is_null())
        differs = pc.if_else(pc.is_null(differs), one_null, differs)
    return differs.to_numpy(zero_copy_only=False)


def occurrence(classes: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows share its class (0 for the first)."""
    order = np.argsort(classes, kind="stable")
    ranked = classes[order]
    positions = np.arange(len(classes))
    starts = np.ones(len(classes), dtype=np.bool_)
    starts[1:] = ranked[1:] != ranked[:-1]
    out = np.empty(len(classes), dtype=np.int64)
    out[order] = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    return out


def _diff_classes(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = int(max(old.max(initial=-1), new.max(initial=-1))) + 1
    count_old = np.bincount(old, minlength=size)
    count_new = np.bincount(new, minlength=size)
    added = np.flatnonzero(occurrence(new) >= count_old[new])
    removed = np.flatnonzero(occurrence(old) >= count_new[old])
    return added, removed


def _same_rows(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Row by row, is ``a[i]`` canonically equal to ``b[i]`` (null equals null)?"""
    rep = _sortable(pa.concat_arrays([a, b]))
    if rep is None:
        return np.ones(len(a), dtype=np.bool_)
    left, right = rep.slice(0, len(a)), rep.slice(len(a))
    same = pc.equal(left, right)
    if same.null_count:
        same = pc.if_else(pc.is_null(same), pc.and_(left.is_null(), right.is_null()), same)
    return same.to_numpy(zero_copy_only=False)


def _diff_by_unique_lead(old: pa.Table, new: pa.Table, lead: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The diff matched on a leading column that is unique and non-null on both sides, else None.

    The usual case (a unique key): one sort and a binary search instead of sorting both
    tables by every column, about 10x faster on 1 M rows (measured).
    """
    if pa.types.is_list(new.schema.field(lead).type) or pa.types.is_fixed_size_list(new.schema.field(lead).type):
        return None  # list ranks are per array, so not comparable across the two tables
    sides = []
    for table in (old, new):
        rep = _sortable(table.column(lead).combine_chunks())
        if rep is None or rep.null_count:
            return None
        order = pc.sort_indices(rep)
        ranked = rep.take(order)
        if not _strictly_increasing(ranked):
            return None
        sides.append((order.to_numpy(), ranked))
    (old_order, old_sorted), (new_order, new_sorted) = sides
    pos = pc.search_sorted(old_sorted, new_sorted).to_numpy().astype(np.int64)
    inside = pos < len(old_sorted)
    clipped = np.minimum(pos, len(old_sorted) - 1)
    matched = inside & pc.equal(old_sorted.take(pa.array(clipped)), new_sorted).to_numpy(zero_copy_only=False)
    old_rows, new_rows = pa.array(old_order[clipped[matched]]), pa.array(new_order[matched])
    same = np.ones(len(old_rows), dtype=np.bool_)
    for name in new.column_names:
        if name != lead:
            same &= _same_rows(old.column(name).take(old_rows).combine_chunks(),
                               new.column(name).take(new_rows).combine_chunks())
    kept_new = np.zeros(new.num_rows, dtype=np.bool_)
    kept_new[new_order[matched][same]] = True
    kept_old = np.zeros(old.num_rows, dtype=np.bool_)
    kept_old[old_order[clipped[matched]][same]] = True
    return np.flatnonzero(~kept_new), np.flatnonzero(~kept_old)


def multiset_diff(old: pa.Table, new: pa.Table, key: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``new`` rows not in ``old``, and of ``old`` rows not in ``new``, as multisets.

    Both tables are normalized with the same columns. Exact (no hashing): rows match
    only if canonically equal in every column.
    """
    if old.num_rows and new.num_rows:
        fast = _diff_by_unique_lead(old, new, _order_columns(new, key)[0])
        if fast is not None:
            return fast
    classes = row_classes(pa.concat_tables([old, new.select(old.column_names)]))
    return _diff_classes(classes[: old.num_rows], classes[old.num_rows :])
