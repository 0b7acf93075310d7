"""The rows each worker trains on: the same for the same config, whatever the storage layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from factory.train import _data


def _spec(version, features=("x",), label="y"):
    return _data.DataSpec(uri=version.uri, lance_version=version.lance_version, key=tuple(version.key),
                          features=tuple(features), label=label, task="classification")


def test_rows_come_back_in_canonical_order_whatever_the_lance_layout(store):
    """A version stored as an append after a later range of keys still reads in key order."""
    n = 300
    table = pa.table({"id": np.arange(n), "x": np.arange(n) * 0.5, "y": np.arange(n) % 3})
    store.datasets.add(table.slice(100), name="pieces", key=["id"])
    pieces = store.datasets.add(table, name="pieces", key=["id"])
    stored = store.datasets.lance(pieces).to_table(columns=["id"]).column("id").to_pylist()
    assert stored != sorted(stored)  # Lance holds ids 100..299 first, then the appended 0..99
    rows = _data.load_rows(_spec(pieces))
    np.testing.assert_array_equal(rows.x[:, 0], np.arange(n) * 0.5)
    np.testing.assert_array_equal(rows.y, np.arange(n) % 3)
    assert rows.x.dtype == np.float32 and rows.y.dtype == np.int64


def test_booleans_are_class_ids_and_regression_targets_are_floats(store):
    """A boolean label trains as classes 0 and 1; a regression label as float32."""
    version = store.datasets.add(pa.table({"id": [2, 1], "x": [1.0, 2.0], "flag": [True, False]}), name="b", key=["id"])
    rows = _data.load_rows(_spec(version, label="flag"))
    np.testing.assert_array_equal(rows.y, [0, 1])
    reg = _data.DataSpec(version.uri, version.lance_version, ("id",), ("x",), "x", "regression")
    assert _data.load_rows(reg).y.dtype == np.float32


def test_split_and_shuffles_are_seeded_and_disjoint():
    """Validation rows never train; each epoch reshuffles; the same seed gives the same order."""
    train, val = _data.split(1000, 0.2, seed=3)
    assert len(val) == 200 and len(train) == 800 and not set(train) & set(val)
    again = _data.split(1000, 0.2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    assert not np.array_equal(_data.split(1000, 0.2, seed=4)[1], val)
    e0, e1 = _data.epoch_order(train, 0, 3), _data.epoch_order(train, 1, 3)
    assert sorted(e0) == sorted(train) and not np.array_equal(e0, e1)
    np.testing.assert_array_equal(e1, _data.epoch_order(train, 1, 3))


def test_workers_split_each_global_batch_without_overlap():
    """Two workers take the two halves of every global batch; together they are the batch."""
    order = np.arange(100)
    for step in range(3):
        parts = [_data.batch_slice(order, step, 20, rank, 2) for rank in range(2)]
        np.testing.assert_array_equal(np.concatenate(parts), order[step * 20:(step + 1) * 20])
    shares = [_data.rank_share(np.arange(10), r, 3) for r in range(3)]
    assert sorted(np.concatenate(shares)) == list(range(10))
