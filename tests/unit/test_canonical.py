"""The canonical digest: same rows, same digest, whatever the order, layout or file format."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import math
import struct

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import InvalidInputError
from factory.store import canonical_digest
from factory.store._canonical import MAGIC, multiset_diff, normalize_table, row_classes
from factory.store.datasets import read_table_file


def _table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([3, 1, 2, 4], pa.int64()),
            "price": pa.array([9.5, None, 0.25, -1.0]),
            "name": pa.array(["c", "a", None, ""]),
            "ok": pa.array([True, False, None, True]),
        }
    )


def _every_type() -> pa.Table:
    return pa.table(
        {
            "i8": pa.array([1, None, 3], pa.int8()),
            "u64": pa.array([2**63, 2, None], pa.uint64()),
            "f16": pa.array(np.array([1.5, -0.0, np.nan], dtype=np.float16)),
            "f32": pa.array([1.0, None, float("nan")], pa.float32()),
            "b": pa.array([True, None, False]),
            "s": pa.array(["a", None, ""]),
            "bin": pa.array([b"x", None, b""]),
            "d32": pa.array([datetime.date(2020, 1, 1), None, datetime.date(2021, 1, 1)]),
            "d64": pa.array([datetime.date(2020, 1, 1)] * 3, pa.date64()),
            "ts": pa.array([1, 2, None], pa.timestamp("us", tz="UTC")),
            "t64": pa.array([1, 2, 3], pa.time64("us")),
            "dur": pa.array([1, 2, 3], pa.duration("ms")),
            "dec": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-4.56")], pa.decimal128(10, 2)),
            "dec256": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-4.56")], pa.decimal256(40, 2)),
            "fsb": pa.array([b"ab", b"cd", None], pa.binary(2)),
            "l": pa.array([[1, None], None, []], pa.list_(pa.int64())),
            "ls": pa.array([["a"], None, ["b", None]], pa.list_(pa.string())),
            "fsl": pa.array([[1.0, 2.0], None, [3.0, None]], pa.list_(pa.float64(), 2)),
            "ll": pa.array([[[1], [2, 3]], None, [[]]], pa.list_(pa.list_(pa.int32()))),
            "nul": pa.array([None, None, None], pa.null()),
        }
    )


# -- a second, naive implementation of the documented stream ------------------------------


def _reference_digest(rows: list[dict], types: dict[str, str], key: list[str]) -> str:
    """The module docstring's stream, built row by row in plain Python (int64/double/string/bool/list<int64>)."""
    ordered = sorted(rows, key=lambda r: tuple(r[k] for k in key))
    names = sorted(types)
    header = {"columns": [[n, types[n]] for n in names], "key": key, "rows": len(rows)}
    out = bytearray(MAGIC)
    out += json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def encode(values: list, kind: str) -> bytes:
        enc = bytearray(bytes(0 if v is None else 1 for v in values))
        if kind == "int64":
            enc += b"".join(struct.pack("<q", v or 0) for v in values)
        elif kind == "double":
            enc += b"".join(
                struct.pack("<Q", 0x7FF8000000000000) if v is not None and math.isnan(v) else struct.pack("<d", 0.0 if v is None else v)
                for v in values
            )
        elif kind == "bool":
            enc += bytes(1 if v else 0 for v in values)
        elif kind == "string":
            enc += b"".join(struct.pack("<q", len(v.encode()) if v is not None else 0) for v in values)
            enc += b"".join(v.encode() for v in values if v is not None)
        elif kind == "list<item: int64>":
            enc += b"".join(struct.pack("<q", len(v) if v is not None else 0) for v in values)
            enc += encode([x for v in values if v is not None for x in v], "int64")
        return bytes(enc)

    for n in names:
        out += encode([r[n] for r in ordered], types[n])
    return "sha256:" + hashlib.sha256(bytes(out)).hexdigest()


def test_digest_matches_the_documented_stream():
    """A plain-Python build of the documented canonical stream hashes to the same digest."""
    rows = [
        {"id": 2, "x": float("nan"), "s": "héllo", "ok": True, "tags": [1, None, 3]},
        {"id": 1, "x": -0.0, "s": None, "ok": None, "tags": None},
        {"id": 3, "x": None, "s": "", "ok": False, "tags": []},
    ]
    types = {"id": "int64", "x": "double", "s": "string", "ok": "bool", "tags": "list<item: int64>"}
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("id", pa.int64()), ("x", pa.float64()), ("s", pa.string()), ("ok", pa.bool_()), ("tags", pa.list_(pa.int64()))]
        ),
    )
    assert canonical_digest(table, key=["id"]) == _reference_digest(rows, types, ["id"])


# -- invariance -------------------------------------------------------------------------


def test_row_order_does_not_change_the_digest():
    """The same rows shuffled hash the same, with and without a key."""
    t = _table()
    shuffled = t.take([2, 0, 3, 1])
    assert canonical_digest(t) == canonical_digest(shuffled)
    assert canonical_digest(t, key=["id"]) == canonical_digest(shuffled, key=["id"])


def test_column_order_and_chunking_do_not_change_the_digest():
    """Reordered columns and a table split into many chunks hash like the original."""
    t = _every_type()
    rechunked = pa.Table.from_batches(t.to_batches(max_chunksize=1))
    assert rechunked.column(0).num_chunks == 3
    assert canonical_digest(rechunked) == canonical_digest(t)
    assert canonical_digest(t.select(list(reversed(t.column_names)))) == canonical_digest(t)


def test_slices_hash_like_fresh_copies():
    """A sliced table (arrays with offsets) hashes like the same rows built from scratch."""
    t = _every_type()
    big = pa.concat_tables([t, t, t]).combine_chunks()
    part = big.slice(4, 3)
    fresh = pa.Table.from_pylist(part.to_pylist(), schema=part.schema)
    assert canonical_digest(part) == canonical_digest(fresh) == canonical_digest(big.slice(1, 3))


def test_file_formats_give_the_same_digest(tmp_path):
    """The same rows as CSV, Parquet, Arrow IPC file, IPC stream and Feather have one digest."""
    t = pa.table({"id": [1, 2, 3], "price": [0.1, None, 2.5], "city": ["Oslo", "Lima", "Pune"], "ok": [True, False, True],
                  "ts": pa.array([0, 86_400, None], pa.timestamp("s", tz="UTC")),
                  "day": pa.array([datetime.date(2026, 1, 2)] * 3)})
    pacsv.write_csv(t, tmp_path / "t.csv")
    pq.write_table(t, tmp_path / "t.parquet")
    with pa.ipc.new_file(tmp_path / "t.arrow", t.schema) as w:
        w.write_table(t)
    with pa.ipc.new_stream(tmp_path / "t.ipc", t.schema) as w:
        w.write_table(t)
    feather.write_feather(t, tmp_path / "t.feather")
    digests = {name: canonical_digest(read_table_file(tmp_path / name), key=["id"])
               for name in ("t.csv", "t.parquet", "t.arrow", "t.ipc", "t.feather")}
    assert set(digests.values()) == {canonical_digest(t, key=["id"])}


def test_physical_variants_of_one_type_hash_alike():
    """large_string, dictionary, large_list and Parquet's 'element' lists hash like their plain forms."""
    plain = pa.table({"s": pa.array(["a", "b", "a"]), "l": pa.array([[1], [2, 3], []], pa.list_(pa.int64()))})
    variant = pa.table(
        {
            "s": pa.array(["a", "b", "a"]).dictionary_encode(),
            "l": pa.array([[1], [2, 3], []], pa.large_list(pa.field("element", pa.int64(), nullable=False))),
        }
    ).replace_schema_metadata({b"pandas": b"{}"})
    big = pa.table({"s": pa.array(["a", "b", "a"], pa.large_string()), "l": plain.column("l")})
    assert canonical_digest(plain) == canonical_digest(variant) == canonical_digest(big)


def test_garbage_under_nulls_is_ignored():
    """Bytes that Arrow keeps under null slots do not leak into the digest."""
    values = np.array([7, 12345, 9], dtype=np.int64)
    validity = pa.py_buffer(np.packbits(np.array([1, 0, 1], dtype=np.uint8), bitorder="little").tobytes())
    dirty = pa.Array.from_buffers(pa.int64(), 3, [validity, pa.py_buffer(values.tobytes())], null_count=1)
    strings = pa.Array.from_buffers(
        pa.string(), 2, [pa.py_buffer(bytes([0b01])), pa.py_buffer(np.array([0, 1, 4], np.int32).tobytes()),
                         pa.py_buffer(b"axyz")], null_count=1
    )
    assert canonical_digest(pa.table({"x": dirty})) == canonical_digest(pa.table({"x": pa.array([7, None, 9])}))
    assert canonical_digest(pa.table({"s": strings})) == canonical_digest(pa.table({"s": ["a", None]}))


def test_nan_payloads_are_one_value_but_signed_zeros_are_two():
    """Every NaN bit pattern hashes alike; -0.0 and +0.0 are different content."""
    quiet = np.array([np.nan], dtype=np.float64)
    payload = np.array([0x7FF0000000000001], dtype=np.uint64).view(np.float64)
    assert canonical_digest(pa.table({"x": quiet})) == canonical_digest(pa.table({"x": payload}))
    assert canonical_digest(pa.table({"x": [0.0]})) != canonical_digest(pa.table({"x": [-0.0]}))


# -- sensitivity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.set_column(1, "price", pa.array([9.5, None, 0.25, -1.5])),
        lambda t: pa.concat_tables([t, t.slice(0, 1)]),
        lambda t: t.slice(1),
        lambda t: t.set_column(0, "id", t.column("id").cast(pa.int32())),
        lambda t: t.set_column(1, "price", pa.array([9.5, 0.0, 0.25, -1.0])),
        lambda t: t.set_column(2, "name", pa.array(["c", "a", "", ""])),
        lambda t: t.rename_columns(["id", "cost", "name", "ok"]),
        lambda t: t.drop_columns(["ok"]),
    ],
    ids=["cell", "duplicate-row", "removed-row", "int32", "null-to-zero", "null-to-empty", "renamed", "dropped"],
)
def test_any_change_of_content_changes_the_digest(change):
    """A changed cell, row, type, name or null gives another digest."""
    t = _table()
    assert canonical_digest(change(t)) != canonical_digest(t)


def test_timestamp_unit_and_zone_are_part_of_the_type():
    """The same instants in another unit or time zone are different content."""
    base = pa.table({"t": pa.array([1_000_000], pa.timestamp("us"))})
    other_unit = pa.table({"t": pa.array([1_000], pa.timestamp("ms"))})
    other_zone = pa.table({"t": pa.array([1_000_000], pa.timestamp("us", tz="UTC"))})
    assert len({canonical_digest(base), canonical_digest(other_unit), canonical_digest(other_zone)}) == 3


def test_the_declared_key_is_part_of_the_identity():
    """The same rows under another key get another digest, so the recorded key is never ambiguous."""
    t = _table()
    assert canonical_digest(t, key=["id"]) != canonical_digest(t)


def test_every_supported_type_hashes_and_unsupported_ones_are_refused():
    """All documented types hash; a struct column is refused with a message naming it."""
    assert canonical_digest(_every_type()).startswith("sha256:")
    with pytest.raises(InvalidInputError, match="'point'.*struct"):
        canonical_digest(pa.table({"point": pa.array([{"x": 1}])}))


def test_bad_tables_and_keys_are_refused():
    """Duplicate column names and unknown key columns are clear input errors."""
    with pytest.raises(InvalidInputError, match="two columns named 'a'"):
        canonical_digest(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]))
    with pytest.raises(InvalidInputError, match="'nope'.*not in the table"):
        canonical_digest(_table(), key=["nope"])


# -- properties -------------------------------------------------------------------------

_FLOATS = st.sampled_from([None, 0.0, -0.0, 1.5, -2.0, float("nan"), float("inf")])
_ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-3, 3)),
        _FLOATS,
        st.one_of(st.none(), st.sampled_from(["", "a", "b", "ab"])),
        st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(0, 2)), max_size=3)),
    ),
    max_size=25,
)
_SCHEMA = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("s", pa.string()), ("l", pa.list_(pa.int64()))])


def _from_rows(rows) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(_SCHEMA.names, r, strict=True)) for r in rows], schema=_SCHEMA)


@settings(max_examples=60, deadline=None)
@given(rows=_ROWS, data=st.data())
def test_order_and_chunking_never_change_the_digest(rows, data):
    """Any permutation and any chunking of small random tables (ties, NaN, nulls, lists) hash alike."""
    t = _from_rows(rows)
    perm = data.draw(st.permutations(range(len(rows))))
    cut = data.draw(st.integers(0, len(rows)))
    shuffled = t.take(pa.array(perm, pa.int64())) if rows else t
    rechunked = pa.concat_tables([shuffled.slice(0, cut), shuffled.slice(cut)])
    for key in ([], ["i"], ["s", "f"]):
        assert canonical_digest(rechunked, key=key) == canonical_digest(t, key=key)


def _py_identity(row):
    """A row as Python sees it under the canonical equality (NaN == NaN, -0.0 != 0.0)."""
    def f(x):
        if isinstance(x, float):
            return "nan" if math.isnan(x) else struct.pack("<d", x)
        return x
    return tuple(tuple(map(f, v)) if isinstance(v, list) else f(v) for v in row)


@settings(max_examples=60, deadline=None)
@given(rows=_ROWS)
def test_row_classes_match_row_equality(rows):
    """Two rows share a class exactly when they are the same canonical content."""
    classes = row_classes(normalize_table(_from_rows(rows)))
    ids = [_py_identity(r) for r in rows]
    for a in range(len(rows)):
        for b in range(len(rows)):
            assert (classes[a] == classes[b]) == (ids[a] == ids[b])


def _counter_diff(old_rows, new_rows):
    """The multiset difference, the slow obvious way."""
    from collections import Counter

    old_ids, new_ids = [_py_identity(r) for r in old_rows], [_py_identity(r) for r in new_rows]
    return Counter(new_ids) - Counter(old_ids), Counter(old_ids) - Counter(new_ids)


@settings(max_examples=60, deadline=None)
@given(old=_ROWS, new=_ROWS, unique=st.booleans())
def test_multiset_diff_matches_counting(old, new, unique):
    """Added and removed rows are exactly the multiset differences, with a unique key column or without."""
    from collections import Counter

    if unique:  # give each row a distinct i, shared between the sides where the rows overlap
        old = [(k, *r[1:]) for k, r in enumerate(old)]
        new = [(k, *r[1:]) for k, r in enumerate(new)]
    o, n = normalize_table(_from_rows(old)), normalize_table(_from_rows(new))
    added, removed = multiset_diff(o, n, key=["i"] if unique else [])
    want_added, want_removed = _counter_diff(old, new)
    assert Counter(_py_identity(new[i]) for i in added) == want_added
    assert Counter(_py_identity(old[i]) for i in removed) == want_removed


def test_empty_tables_hash_by_their_schema():
    """Tables without rows hash alike however they were built, and differ by schema."""
    schema = _every_type().schema
    built = [pa.Table.from_pylist([], schema=schema), _every_type().slice(3), schema.empty_table()]
    assert len({canonical_digest(t) for t in built}) == 1
    assert canonical_digest(schema.empty_table()) != canonical_digest(pa.schema(list(schema)[:-1]).empty_table())


@settings(max_examples=60, deadline=None)
@given(rows=_ROWS, data=st.data())
def test_digest_from_batches_equals_the_digest_of_the_whole(rows, data):
    """A sorted table digested piece by piece, in pieces of any sizes, hashes like the whole table."""
    from factory.store._canonical import canonical_order, digest_from_batches, sorted_digest

    table = normalize_table(_from_rows(rows))
    key = data.draw(st.sampled_from([[], ["i"], ["s", "f"]]))
    ordered = table.take(canonical_order(table, key))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    bounds = [0, *cuts, len(rows)]

    def pieces(name):
        column = ordered.column(name).combine_chunks()
        return [column.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]

    assert digest_from_batches(ordered.schema, key, len(rows), pieces) == sorted_digest(ordered, key)
    assert sorted_digest(ordered, key) == canonical_digest(table, key)
