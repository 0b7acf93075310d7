"""A byte string per row whose bytewise order is the canonical row order.

``_canonical.canonical_order`` sorts one table in memory. To put rows in canonical
order across a cluster (Ray Data sorts by one column, comparing binary values
bytewise) each row gets a *memcomparable* key: the concatenation, over the columns in
canonical order (key columns, then the others by name), of an encoding that sorts
bytewise exactly as the canonical order compares that column:

- every value starts with a null flag, ``0x00`` present or ``0x01`` null (nulls last);
- integers and everything stored as integers (dates, times, timestamps, durations,
  decimals): big-endian two's complement with the sign bit flipped;
- floats: the canonical bits (one NaN), negatives inverted and positives with the sign
  bit set (IEEE-754 total order: -NaN < -inf < ... < -0.0 < +0.0 < ... < NaN);
- bool: one byte; fixed_size_binary: its bytes;
- string and binary: the bytes with each ``0x00`` written ``0x00 0xFF``, then ``0x00 0x00``
  (so a prefix sorts first and no value is a prefix of another's encoding);
- lists: ``0x01`` before each element's encoding, then ``0x00`` (element by element, a
  prefix first); a null column has no bytes (every row ties on it).

Fixed-width encodings keep their width for nulls (zero bytes after the flag), so a
column's bytes line up row by row. Rows whose keys are equal are canonically equal, so
any order of them gives the same canonical stream. Everything is numpy over whole
buffers; no Python loop runs per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.store._canonical import _FLOATS, _float_bits, _lengths, _order_columns, _valid

__all__ = ["canonical_row_key"]

# A ragged byte column: per-row lengths (int64) and the rows' bytes concatenated (uint8).
_Ragged = tuple[np.ndarray, np.ndarray]


def canonical_row_key(table: pa.Table, key: Sequence[str] = ()) -> pa.Array:
    """For each row of a normalized table, bytes whose bytewise order is the canonical order."""
    n = table.num_rows
    parts = [_encode(table.column(name).combine_chunks()) for name in _order_columns(table, key)]
    lengths, data = _concat_rows([p for p in parts if p is not None], n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _encode(arr: pa.Array) -> _Ragged | None:
    """One column's memcomparable encoding, row by row (None for a null-typed column)."""
    t = arr.type
    if pa.types.is_null(t):
        return None
    valid = _valid(arr)
    flag = (~valid).astype(np.uint8)[:, None]
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return _encode_bytes(arr, valid)
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return _encode_list(arr, valid)
    if pa.types.is_boolean(t):
        values = (pc.fill_null(arr, False) if arr.null_count else arr).to_numpy(zero_copy_only=False)
        matrix = np.hstack([flag, values.astype(np.uint8)[:, None]])
    else:
        matrix = np.hstack([flag, _fixed_big_endian(arr, valid)])
    n, width = matrix.shape
    return np.full(n, width, dtype=np.int64), matrix.reshape(-1)


def _fixed_big_endian(arr: pa.Array, valid: np.ndarray) -> np.ndarray:
    """A fixed-width column as an (n, width) matrix of order-preserving big-endian bytes (zeros for nulls)."""
    t = arr.type
    n, width = len(arr), t.bit_width // 8
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8, count=(arr.offset + n) * width)[arr.offset * width :]
    if pa.types.is_fixed_size_binary(t):
        matrix = raw.reshape(n, width).copy()
    elif pa.types.is_floating(t):
        utype = _FLOATS[t.bit_width][1]
        bits = _float_bits(raw, t.bit_width)
        sign = utype(1) << utype(t.bit_width - 1)
        ordered = np.where(bits & sign, ~bits, bits | sign).astype(utype)
        matrix = ordered.astype(ordered.dtype.newbyteorder(">")).view(np.uint8).reshape(n, width)
    else:
        matrix = raw.reshape(n, width)[:, ::-1].copy()  # little- to big-endian
        if not pa.types.is_unsigned_integer(t):
            matrix[:, 0] ^= 0x80  # two's complement: flipping the sign bit makes it unsigned order
    if not valid.all():
        matrix[~valid] = 0
    return matrix


def _encode_bytes(arr: pa.Array, valid: np.ndarray) -> _Ragged:
    """Strings and binaries: flag, the bytes with 0x00 escaped as 0x00 0xFF, and a 0x00 0x00 terminator."""
    n = len(arr)
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(b"" if pa.types.is_binary(arr.type) else "", arr.type))
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + n + 1)[arr.offset :].astype(np.int64)
    buffer = arr.buffers()[2]
    size = int(offsets[-1] - offsets[0])
    data = np.frombuffer(buffer, dtype=np.uint8, count=int(offsets[-1]))[offsets[0] :] if size else np.zeros(0, np.uint8)
    zero = data == 0
    escaped = np.repeat(data, 1 + zero)
    escaped[np.flatnonzero(zero) + np.cumsum(zero)[zero]] = 0xFF  # the second byte of each escaped 0x00
    zeros_before = np.concatenate([[0], np.cumsum(zero)])  # at each byte position (null rows hold no bytes)
    starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    lengths = ends - starts + zeros_before[ends] - zeros_before[starts]
    flag = (np.ones(n, np.int64), (~valid).astype(np.uint8))
    end = (np.where(valid, 2, 0).astype(np.int64), np.zeros(2 * int(valid.sum()), np.uint8))
    return _concat_rows([flag, (lengths, escaped), end], n)


def _encode_list(arr: pa.Array, valid: np.ndarray) -> _Ragged:
    """Lists: flag, then 0x01 and the element's encoding for each element, then 0x00."""
    n = len(arr)
    child = _encode(arr.flatten())
    counts = _lengths(arr)
    elements = int(counts.sum())
    if child is None:  # elements of the null type: all equal, only their number counts
        child = (np.zeros(elements, np.int64), np.zeros(0, np.uint8))
    marked = _concat_rows([(np.ones(elements, np.int64), np.ones(elements, np.uint8)), child], elements)
    first = np.concatenate([[0], np.cumsum(counts)])  # each row's first element, and the end
    element_ends = np.concatenate([[0], np.cumsum(marked[0])])
    body = (element_ends[first[1:]] - element_ends[first[:-1]], marked[1])
    flag = (np.ones(n, np.int64), (~valid).astype(np.uint8))
    end = (valid.astype(np.int64), np.zeros(int(valid.sum()), np.uint8))
    return _concat_rows([flag, body, end], n)


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where each row's bytes begin, given every row's length."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _concat_rows(parts: Sequence[_Ragged], n: int) -> _Ragged:
    """Row by row, the concatenation of several ragged byte columns of ``n`` rows."""
    lengths = np.zeros(n, dtype=np.int64)
    for part_lengths, _ in parts:
        lengths += part_lengths
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    write_at = _starts(lengths)
    for part_lengths, data in parts:
        if len(data):
            out[np.arange(len(data)) + np.repeat(write_at - _starts(part_lengths), part_lengths)] = data
        write_at += part_lengths
    return lengths, out
