"""Diffing a new version against the stored one without reading the stored one into memory.

The stored version is read in batches of 64 k rows (with their Lance row addresses) and
each batch is matched against the new rows, which are in memory anyway. The result is
the exact multiset difference: which new rows to append, which stored rows to delete.

New rows are grouped, and each stored row is looked up to a group:

- by the leading order column (the first key column, else the first column by name)
  when it is unique and never null in the new rows: one binary search per batch, the
  usual case for a keyed table;
- otherwise by a 64-bit hash of the whole row (``_rowhash``), rows of one group being
  the copies of one row.

A stored row matched to a group is compared column by column with the group's row, and
takes one of the group's copies if one is left (so duplicates match as a multiset). A
lookup by hash whose rows then differ is a collision: the diff gives up (``None``) and
the caller writes the version in full, which is correct, only larger. Memory beyond the
new rows: about 5 bytes per row on the leading column, about 25 with hashes, plus a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.store._canonical import _order_columns, _same_rows, _sortable, _strictly_increasing, normalize_table
from factory.store._canonical import occurrence
from factory.store._rowhash import row_hashes

if TYPE_CHECKING:
    from collections.abc import Sequence

    import lance

__all__ = ["Delta", "stream_diff"]

BATCH_ROWS = 1 << 16


@dataclass(frozen=True)
class Delta:
    """New rows to append (indices into the new table) and stored rows to delete (row addresses)."""

    added: np.ndarray
    removed: np.ndarray


class _Groups:
    """The new rows in groups of equal rows; ``exact`` when a lookup hit proves nothing but the lead."""

    def __init__(self, order: np.ndarray | None, start: np.ndarray | None, size: np.ndarray | None, count: int,
                 exact: bool):
        self.order, self.start, self.size, self.count, self.exact = order, start, size, count, exact

    def row(self, group: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """The new row holding copy ``slot`` of each group."""
        if self.order is None:
            return group
        return self.order[self.start[group] + slot]

    def copies(self, group: np.ndarray) -> np.ndarray:
        return np.ones(len(group), dtype=np.int64) if self.size is None else self.size[group]


class _ByLead(_Groups):
    """One group per new row, found by the leading order column (unique and never null)."""

    def __init__(self, lead: str, sorted_rep: pa.Array):
        super().__init__(None, None, None, len(sorted_rep), exact=True)
        self.lead, self.rep = lead, sorted_rep

    @classmethod
    def of(cls, table: pa.Table, key: Sequence[str]) -> _ByLead | None:
        lead = _order_columns(table, key)[0]
        t = table.schema.field(lead).type
        if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or table.num_rows == 0:
            return None  # list ranks are per array, so not comparable across tables
        rep = _sortable(table.column(lead).combine_chunks())
        # The table is in canonical order, so a unique lead is already strictly increasing.
        if rep is None or rep.null_count or not (len(rep) == 1 or _strictly_increasing(rep)):
            return None
        return cls(lead, rep)

    def lookup(self, rows: pa.Table) -> np.ndarray:
        group = np.full(rows.num_rows, -1, dtype=np.int64)
        rep = _sortable(rows.column(self.lead).combine_chunks())
        present = np.flatnonzero(rep.is_valid().to_numpy(zero_copy_only=False))
        if not len(present):
            return group
        needles = rep.take(pa.array(present))
        pos = pc.search_sorted(self.rep, needles).to_numpy().astype(np.int64)
        inside = pos < len(self.rep)
        clipped = np.minimum(pos, len(self.rep) - 1)
        found = inside & pc.equal(self.rep.take(pa.array(clipped)), needles).to_numpy(zero_copy_only=False)
        group[present[found]] = clipped[found]
        return group


class _ByHash(_Groups):
    """Groups of identical new rows, found by a hash of the whole row."""

    def __init__(self, order: np.ndarray, start: np.ndarray, size: np.ndarray, keys: np.ndarray):
        super().__init__(order, start, size, len(start), exact=False)
        self.keys = keys

    @classmethod
    def of(cls, table: pa.Table) -> _ByHash | None:
        n = table.num_rows
        hashes = row_hashes(table)
        order = np.argsort(hashes, kind="stable").astype(np.uint32 if n < 2**32 else np.int64)
        ranked = hashes[order]
        del hashes
        first = np.ones(n, dtype=np.bool_)
        first[1:] = ranked[1:] != ranked[:-1]
        start = np.flatnonzero(first)
        keys = ranked[start]
        del ranked
        size = np.diff(np.append(start, n))
        if (size > 1).any() and not cls._copies_equal(table, order, first):
            return None  # two different new rows share a hash
        return cls(order, start, size, keys)

    @staticmethod
    def _copies_equal(table: pa.Table, order: np.ndarray, first: np.ndarray) -> bool:
        group = np.cumsum(first) - 1
        copies = np.flatnonzero(~first)
        representative = order[np.flatnonzero(first)[group[copies]]]
        return bool(_equal_rows(table, order[copies], table, representative).all())

    def lookup(self, rows: pa.Table) -> np.ndarray:
        h = row_hashes(rows)
        pos = np.minimum(np.searchsorted(self.keys, h), len(self.keys) - 1)
        return np.where(self.keys[pos] == h, pos, -1)


def _equal_rows(a: pa.Table, a_rows: np.ndarray, b: pa.Table, b_rows: np.ndarray) -> np.ndarray:
    """Row by row, is ``a[a_rows[i]]`` canonically equal to ``b[b_rows[i]]`` in every column?"""
    same = np.ones(len(a_rows), dtype=np.bool_)
    ia, ib = pa.array(a_rows), pa.array(b_rows)
    for name in b.column_names:
        same &= _same_rows(a.column(name).take(ia).combine_chunks(), b.column(name).take(ib).combine_chunks())
    return same


def _match(groups: _Groups, rows: pa.Table, table: pa.Table, kept: np.ndarray,
           claimed: np.ndarray) -> np.ndarray | None:
    """Which stored ``rows`` have no copy left in the new ``table`` (marking in ``kept`` those that do)."""
    gone = np.ones(rows.num_rows, dtype=np.bool_)
    group = groups.lookup(rows)
    hit = np.flatnonzero(group >= 0)
    if not len(hit):
        return gone
    same = _equal_rows(rows, hit, table, groups.row(group[hit], np.zeros(len(hit), dtype=np.int64)))
    if not groups.exact and not same.all():
        return None  # a hash collision: let the caller take the slow, sure path
    hit = hit[same]
    g = group[hit]
    slot = claimed[g] + occurrence(g)
    fits = slot < groups.copies(g)
    kept[groups.row(g[fits], slot[fits])] = True
    taken, counts = np.unique(g[fits], return_counts=True)
    claimed[taken] += counts.astype(claimed.dtype)
    gone[hit[fits]] = False
    return gone


def stream_diff(dataset: lance.LanceDataset, table: pa.Table, key: Sequence[str], *, max_removed: int,
                batch_rows: int = BATCH_ROWS) -> Delta | None:
    """``table`` (normalized, in canonical order) against the rows of ``dataset``, as multisets.

    None when more than ``max_removed`` stored rows would have to go (a full write is
    then smaller) or when row hashes collide.
    """
    if table.num_rows == 0:
        return None
    groups = _ByLead.of(table, key) or _ByHash.of(table)
    if groups is None:
        return None
    kept = np.zeros(table.num_rows, dtype=np.bool_)
    claimed = np.zeros(groups.count, dtype=np.int32)
    removed: list[np.ndarray] = []
    total = 0
    for batch in dataset.to_batches(with_row_address=True, batch_size=batch_rows):
        addresses = batch.column("_rowaddr").to_numpy()
        rows = normalize_table(pa.Table.from_batches([batch]).drop_columns(["_rowaddr"])).select(table.column_names)
        gone = _match(groups, rows, table, kept, claimed)
        if gone is None:
            return None
        removed.append(addresses[gone])
        total += int(gone.sum())
        if total > max_removed:
            return None
    return Delta(np.flatnonzero(~kept), np.concatenate(removed) if removed else np.zeros(0, dtype=np.uint64))
