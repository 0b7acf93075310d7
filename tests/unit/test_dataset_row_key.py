"""The canonical row key: sorting rows by it bytewise gives exactly the canonical row order."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.store._canonical import canonical_order, normalize_table, sorted_digest
from factory.store.datasets._row_key import canonical_row_key


def by_key(table, key=()):
    """The canonical stream of the table's rows sorted by their row keys, bytewise."""
    return sorted_digest(table.take(pc.sort_indices(canonical_row_key(table, key))), key)


def canonical(table, key=()):
    """The canonical stream of the table's rows in canonical order (NaN-safe, unlike Table.equals)."""
    return sorted_digest(table.take(canonical_order(table, key)), key)


def test_every_supported_type_sorts_canonically():
    """Signs, NaN and -0.0, nulls, empty and embedded-zero strings, decimals, lists of lists: the canonical order."""
    table = normalize_table(pa.table({
        "i8": pa.array([1, None, -3, -128, 127, 0, 1], pa.int8()),
        "u64": pa.array([2**63, 2, None, 0, 2**64 - 1, 1, 2], pa.uint64()),
        "f": pa.array([1.5, -0.0, float("nan"), 0.0, None, float("-inf"), -2.5]),
        "f16": pa.array(np.array([1.5, -0.0, np.nan, 0.0, 2.0, -1.0, 3.0], dtype=np.float16)),
        "b": pa.array([True, None, False, True, False, True, None]),
        "s": pa.array(["a", None, "", "a\x00", "a\x00b", "ab", "\x00"]),
        "bin": pa.array([b"x", None, b"", b"\x00\xff", b"\x00", b"x\x00", b"\xff"]),
        "d32": pa.array([datetime.date(2020, 1, 1), None, datetime.date(1960, 1, 1)] * 2 + [None]),
        "ts": pa.array([1, -2, None, 3, -(2**62), 2**62, 0], pa.timestamp("us", tz="UTC")),
        "dec": pa.array([decimal.Decimal(x) if x else None for x in ["1.23", None, "-4.56", "0", "-0.01", "99", None]],
                        pa.decimal128(10, 2)),
        "fsb": pa.array([b"ab", b"cd", None, b"\x00\x00", b"ab", b"a\x00", b"zz"], pa.binary(2)),
        "l": pa.array([[1, None], None, [], [1], [1, 2], [None], [0, 5]], pa.list_(pa.int64())),
        "ls": pa.array([["a"], None, ["b", None], [], ["a", ""], [""], ["a\x00"]], pa.list_(pa.string())),
        "fsl": pa.array([[1.0, 2.0], None, [3.0, None], [-0.0, 0.0], [0.0, -0.0], None, [1.0, 2.0]],
                        pa.list_(pa.float64(), 2)),
        "ll": pa.array([[[1], [2, 3]], None, [[]], [], [[1], [2]], [None], [[1], [2, 3], []]],
                       pa.list_(pa.list_(pa.int32()))),
        "nul": pa.array([None] * 7, pa.null()),
    }))
    for first in table.column_names:
        assert by_key(table, (first,)) == canonical(table, (first,)), first
    assert by_key(table) == canonical(table)


_ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-3, 3)),
        st.sampled_from([None, 0.0, -0.0, 1.5, -2.0, float("nan"), float("inf")]),
        st.one_of(st.none(), st.sampled_from(["", "a", "b", "ab", "a\x00", "\x00"])),
        st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(0, 2)), max_size=3)),
        st.one_of(st.none(), st.lists(st.one_of(st.none(), st.sampled_from(["", "a", "\x00"])), max_size=2)),
    ),
    max_size=30,
)
_SCHEMA = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("s", pa.string()), ("l", pa.list_(pa.int64())),
                     ("ls", pa.list_(pa.string()))])


@settings(max_examples=80, deadline=None)
@given(rows=_ROWS, key=st.sampled_from([(), ("i",), ("s", "f"), ("l",), ("ls", "i")]))
def test_random_tables_sort_canonically(rows, key):
    """Small random tables with ties, NaN, nulls, zero bytes and lists: key order is canonical order."""
    table = pa.Table.from_pylist([dict(zip(_SCHEMA.names, r, strict=True)) for r in rows], schema=_SCHEMA)
    table = normalize_table(table)
    assert by_key(table, key) == canonical(table, key)


def test_keys_of_slices_are_the_keys_of_copies():
    """A sliced table (arrays with offsets) gets the same keys as the same rows copied."""
    table = normalize_table(pa.table({"s": ["x", "a\x00", None, "b"], "l": [[1], None, [2, 3], []],
                                      "f": [1.0, None, -0.0, 2.0]}))
    assert canonical_row_key(table.slice(1)).equals(canonical_row_key(pa.Table.from_pylist(table.slice(1).to_pylist(),
                                                                                           schema=table.schema)))
