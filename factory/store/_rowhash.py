"""A 64-bit hash of each row's canonical content, computed over whole columns with numpy.

Rows that are canonically equal (see ``_canonical``: NaNs merged, ``-0.0`` apart from
``+0.0``, null equal to null) always hash equal. Unequal rows collide with a chance of
about 2^-64 per pair; whoever matches rows by hash confirms each match exactly, so a
collision costs a slower path, never a wrong answer. The hash is a lookup key, not an
identity: it is not part of any digest and may change between versions of factory.

Variable-length values (strings, binaries, lists) are hashed as polynomials over their
bytes (or element hashes) with prefix sums, a megabyte of values per numpy pass; values
longer than 64 KiB are hashed one by one with BLAKE2b, so memory stays bounded whatever
a cell holds.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.store._canonical import _fixed_values, _lengths, _valid

__all__ = ["row_hashes"]

_P = 0x100000001B3  # odd, so invertible modulo 2^64
_P_INV = pow(_P, -1, 1 << 64)
_SEGMENT = 1 << 20  # values per numpy pass
_LONG = 1 << 16  # longer values are hashed on their own
_SLICE = 1 << 20  # rows per pass over a table
_NULL = np.uint64(0x5BD1E9955BD1E995)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, element-wise (uint64 arithmetic wraps)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _C1
    h = h ^ (h >> np.uint64(27))
    h = h * _C2
    return h ^ (h >> np.uint64(31))


@functools.cache
def _powers() -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i modulo 2^64 for i = 0.._SEGMENT."""
    out = []
    for base in (_P, _P_INV):
        pw = np.full(_SEGMENT + 1, base, dtype=np.uint64)
        pw[0] = 1
        out.append(np.cumprod(pw, dtype=np.uint64))
    return out[0], out[1]


def _long(values: np.ndarray) -> np.uint64:
    return np.frombuffer(hashlib.blake2b(values.tobytes(), digest_size=8).digest(), dtype=np.uint64)[0]


def _segments(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One hash per segment ``values[offsets[i]:offsets[i+1]]`` (``values`` uint8 or uint64)."""
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    lengths = np.diff(offsets)
    long_rows = np.flatnonzero(lengths > _LONG)
    for row in long_rows:
        out[row] = _long(values[offsets[row] : offsets[row + 1]])
    pw, ipw = _powers()
    stops = np.append(long_rows, n)
    row = 0
    for stop in stops:  # runs of short rows between the long ones
        while row < stop:
            base = offsets[row]
            end = int(np.searchsorted(offsets, base + _SEGMENT, side="right")) - 1
            end = min(max(end, row + 1), stop)
            v = values[base : offsets[end]].astype(np.uint64)
            sums = np.zeros(len(v) + 1, dtype=np.uint64)
            np.cumsum(v * pw[: len(v)], out=sums[1:])
            o = offsets[row : end + 1] - base
            out[row:end] = (sums[o[1:]] - sums[o[:-1]]) * ipw[o[:-1]]
            row = end
        row = stop + 1
    return out


def _column(arr: pa.Array) -> np.ndarray:
    """One hash per value of a normalized, contiguous column."""
    t = arr.type
    n = len(arr)
    if pa.types.is_null(t):
        return np.full(n, _NULL, dtype=np.uint64)
    valid = _valid(arr)
    if pa.types.is_boolean(t):
        filled = pc.fill_null(arr, False) if arr.null_count else arr
        h = _mix(filled.to_numpy(zero_copy_only=False).astype(np.uint64) + _GOLDEN)
    elif pa.types.is_string(t) or pa.types.is_binary(t):
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + n + 1)[arr.offset :]
        offsets = offsets.astype(np.int64)
        data = arr.buffers()[2]
        values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
        lengths = np.diff(offsets)
        if not valid.all():
            lengths = np.where(valid, lengths, 0)
        h = _mix(_segments(values, offsets) ^ _mix(lengths.astype(np.uint64) + _GOLDEN))
    elif pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        lengths = _lengths(arr)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        h = _mix(_segments(_column(arr.flatten()), offsets) ^ _mix(lengths.astype(np.uint64) + _GOLDEN))
    else:
        matrix = _fixed_values(arr, valid)
        width = matrix.shape[1]
        words = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
        words[:, :width] = matrix
        words = words.view(np.uint64)
        h = _mix(words[:, 0] + _GOLDEN)
        for j in range(1, words.shape[1]):
            h = _mix(h ^ words[:, j])
    return np.where(valid, h, _NULL)


def row_hashes(table: pa.Table) -> np.ndarray:
    """One uint64 per row of a normalized table: equal for canonically equal rows (columns taken by name)."""
    out = np.empty(table.num_rows, dtype=np.uint64)
    names = sorted(table.column_names)
    with np.errstate(over="ignore"):
        for start in range(0, table.num_rows, _SLICE):
            part = table.slice(start, _SLICE)
            h = np.zeros(part.num_rows, dtype=np.uint64)
            for i, name in enumerate(names):
                h = _mix(h ^ (_column(part.column(name).combine_chunks()) + np.uint64(i + 1) * _GOLDEN))
            out[start : start + part.num_rows] = h
    return out
