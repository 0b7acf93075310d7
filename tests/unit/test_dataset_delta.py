"""Adding version N+1 diffs it against version N in streamed batches: exact, and never reading N whole."""

from __future__ import annotations

import lance
import numpy as np
import pyarrow as pa
import pytest

from factory.store._canonical import canonical_digest, canonical_order, multiset_diff, normalize_table
from factory.store._rowhash import row_hashes
from factory.store.datasets._delta import stream_diff


def _random_table(rng: np.random.Generator, n: int, *, unique_id: bool) -> pa.Table:
    ids = rng.permutation(n * 3)[:n] if unique_id else rng.integers(0, max(1, n // 3), n)
    floats = rng.choice([0.0, -0.0, 1.5, np.nan, np.inf, -2.25], n)
    words = rng.choice(["", "a", "bb", "ccc", "x" * 70_000], n)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "f": pa.array(floats, mask=rng.random(n) < 0.1),
        "s": pa.array(words, mask=rng.random(n) < 0.1),
        "l": pa.array([None if rng.random() < 0.1 else list(rng.integers(0, 3, rng.integers(0, 3)))
                       for _ in range(n)], pa.list_(pa.int32())),
        "b": pa.array(rng.random(n) < 0.5),
    })


def _next_version(rng: np.random.Generator, old: pa.Table, *, unique_id: bool) -> pa.Table:
    """Drop some rows, change some, duplicate some, add some."""
    n = old.num_rows
    keep = old.take(pa.array(np.flatnonzero(rng.random(n) < 0.8)))
    changed = old.take(pa.array(rng.integers(0, n, max(1, n // 10))))
    changed = changed.set_column(1, "f", pa.array(rng.random(changed.num_rows)))
    extra = _random_table(rng, max(1, n // 5), unique_id=False)
    if unique_id:
        extra = extra.set_column(0, "id", pa.array(np.arange(extra.num_rows) + 10 * n, pa.int64()))
        changed = changed.set_column(0, "id", pa.array(np.arange(changed.num_rows) + 20 * n, pa.int64()))
        return pa.concat_tables([keep, changed, extra])
    return pa.concat_tables([keep, changed, extra, keep.slice(0, 3)])


def _canonical(table: pa.Table, key) -> pa.Table:
    table = normalize_table(table)
    return table.take(canonical_order(table, key))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("unique_id", [True, False])
def test_the_streamed_diff_is_the_exact_multiset_diff(tmp_path, seed, unique_id):
    """Across tiny batches, with duplicates, nulls, NaN, -0.0, long strings and lists: the same rows as in memory."""
    rng = np.random.default_rng(seed)
    key = ["id"] if unique_id else []
    old = _canonical(_random_table(rng, 60, unique_id=unique_id), key)
    new = _canonical(_next_version(rng, old, unique_id=unique_id), key)
    uri = str(tmp_path / "d.lance")
    stored = lance.write_dataset(old, uri)
    delta = stream_diff(stored, new, key, max_removed=new.num_rows * 10, batch_rows=7)
    assert delta is not None
    added, removed = multiset_diff(old, new, key)
    assert (len(delta.added), len(delta.removed)) == (len(added), len(removed))
    # Applying the diff to the stored rows gives exactly the new version.
    addresses = stored.to_table(with_row_address=True).column("_rowaddr").to_numpy()
    survivors = old.take(pa.array(np.flatnonzero(~np.isin(addresses, delta.removed))))
    result = pa.concat_tables([survivors, new.take(pa.array(delta.added))])
    assert canonical_digest(result, key) == canonical_digest(new, key)


def test_adding_a_version_never_reads_the_previous_one_whole(store, monkeypatch):
    """Version N+1 (1 % more rows) is stored as an append while reading version N back whole is forbidden."""
    rng = np.random.default_rng(0)
    base = pa.table({"id": np.arange(20_000), "v": rng.random(20_000), "s": rng.choice(["a", "b"], 20_000)})
    v1 = store.datasets.add(base, name="sales", key=["id"])
    more = pa.concat_tables([base, pa.table({"id": np.arange(20_000, 20_200), "v": rng.random(200),
                                             "s": rng.choice(["a", "b"], 200)})])

    def refuse(*args, **kwargs):
        raise AssertionError("version N was read back whole")

    monkeypatch.setattr(lance.LanceDataset, "to_table", refuse)
    v2 = store.datasets.add(more.take(rng.permutation(more.num_rows)), name="sales")
    monkeypatch.undo()
    assert v2.lance_version == v1.lance_version + 1
    assert canonical_digest(store.datasets.read(v2), ["id"]) == v2.digest == canonical_digest(more, ["id"])
    assert canonical_digest(store.datasets.read(v1), ["id"]) == v1.digest


def test_a_hash_collision_falls_back_to_a_full_write_with_the_same_digest(store, monkeypatch):
    """If every row hashed alike, the diff gives up and the version is written in full: still exact."""
    import factory.store.datasets._delta as delta

    table = pa.table({"k": [1, 1, 2, 2], "v": ["a", "b", "c", "d"]})
    v1 = store.datasets.add(table, name="d")
    monkeypatch.setattr(delta, "row_hashes", lambda t: np.zeros(t.num_rows, dtype=np.uint64))
    bigger = pa.concat_tables([table, pa.table({"k": [3], "v": ["e"]})])
    v2 = store.datasets.add(bigger, name="d")
    assert canonical_digest(store.datasets.read(v2)) == v2.digest == canonical_digest(bigger)
    assert canonical_digest(store.datasets.read(v1)) == v1.digest


def test_row_hashes_agree_for_equal_rows_however_stored():
    """Equal rows hash equal across slicing, chunking and NaN payloads; -0.0 and 0.0 differ, as in the digest."""
    t = normalize_table(pa.table({
        "f": pa.array([0.0, -0.0, float("nan"), 1.0]),
        "s": pa.array(["x" * 100_000, "y", None, ""]),
        "l": pa.array([[1], [], None, [1, 2]], pa.list_(pa.int64())),
    }))
    h = row_hashes(t)
    assert len(set(h.tolist())) == 4
    assert (row_hashes(t.slice(1, 3)) == h[1:]).all()
    chunked = pa.Table.from_batches(t.to_batches(max_chunksize=1))
    assert (row_hashes(normalize_table(chunked)) == h).all()
    other_nan = pa.array(np.array([0x7FF8000000000001], dtype=np.uint64).view(np.float64))
    assert row_hashes(pa.table({"f": other_nan})) == row_hashes(pa.table({"f": pa.array([float("nan")])}))
