"""Training sets on Ray from Ray Datasets: recorded with the local digest, never collected in the driver."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from factory.store import canonical_digest
from factory.store.features import FeatureView


def ts(seconds):
    return pa.array(np.asarray(seconds, dtype=np.int64) * 10**6).cast(pa.timestamp("us", tz="UTC"))


def add_view(store, users=100, events=2000, seed=3):
    """A view over random events of ``users`` users (ties, nulls), TTL 500 s."""
    rng = np.random.default_rng(seed)
    table = pa.table({"user": rng.integers(0, users, events), "ts": ts(rng.integers(0, 5000, events)),
                      "amount": pa.array(rng.random(events), mask=rng.random(events) < 0.05),
                      "tag": pa.array([f"t{i}" for i in rng.integers(0, 5, events)])})
    source = store.datasets.add(table, name="events")
    store.features.register(FeatureView(name="spend", entities=("user",), timestamp="ts", ttl=timedelta(seconds=500),
                                        features=("amount", "tag"), source=source.digest))


def entity_rows(n, users=110, seed=4):
    rng = np.random.default_rng(seed)
    return pa.table({"user": rng.integers(0, users, n), "event_timestamp": ts(rng.integers(0, 5500, n)),
                     "label": rng.integers(0, 2, n)})


def test_empty_entity_table_on_ray_gives_the_local_result(ray_cluster, store):
    """No entity rows on the ray engine: the empty training set the local engine gives, not a shuffle error."""
    add_view(store)
    empty = entity_rows(0)
    on_ray = store.features.get_historical_features(empty, "spend", engine="ray", name="a")
    local = store.features.get_historical_features(empty, "spend", engine="local", name="b")
    assert on_ray.table.equals(local.table) and on_ray.table.num_rows == 0
    assert on_ray.version.digest == local.version.digest


def test_ray_dataset_of_entity_rows_is_recorded_with_the_local_digest(ray_cluster, store):
    """Entity rows as a Ray Dataset: the recorded training set has the local engine's digest and rows."""
    import ray.data

    add_view(store)
    rows = entity_rows(3000)
    blocks = [rows.slice(i, 700) for i in range(0, 3000, 700)]
    on_ray = store.features.get_historical_features(ray.data.from_arrow(blocks), "spend", name="train-ray")
    assert on_ray.table is None
    local = store.features.get_historical_features(rows, "spend", engine="local", name="train-local")
    assert on_ray.version.digest == local.version.digest
    assert on_ray.version.num_rows == 3000
    assert canonical_digest(store.datasets.read(on_ray.version)) == on_ray.version.digest
    assert set(store.artifacts.get(on_ray.version.digest).parents) == {store.features.get("spend").digest}
    back = pa.concat_tables(ray.get(on_ray.dataset.to_arrow_refs()))
    assert canonical_digest(back) == on_ray.version.digest


def test_empty_ray_dataset_and_a_reference_on_ray(ray_cluster, store):
    """An empty Ray Dataset, or a view without rows, gives the local result; a reference on the ray engine streams too."""
    import ray.data

    add_view(store)
    empty = store.features.get_historical_features(ray.data.from_arrow(entity_rows(0)), "spend", name="e")
    assert empty.version.num_rows == 0
    assert empty.version.digest == store.features.get_historical_features(entity_rows(0), "spend", name="f").version.digest
    source = store.datasets.add(pa.table({"user": pa.array([], pa.int64()), "ts": ts([]), "amount": pa.array([], pa.float64()),
                                          "tag": pa.array([], pa.string())}), name="nothing")
    store.features.register(FeatureView(name="none", entities=("user",), timestamp="ts", ttl=timedelta(seconds=5),
                                        features=("amount",), source=source.digest))
    rows = entity_rows(50)
    no_view_rows = store.features.get_historical_features(ray.data.from_arrow(rows), "none", name="n")
    assert no_view_rows.version.digest == store.features.get_historical_features(rows, "none", name="m").version.digest
    labels = store.datasets.add(entity_rows(500), name="labels")
    by_ref = store.features.get_historical_features("labels", "spend", engine="ray", name="g")
    local = store.features.get_historical_features("labels", "spend", engine="local", name="h")
    assert by_ref.table is None and by_ref.version.digest == local.version.digest
    assert labels.digest in store.artifacts.get(by_ref.version.digest).parents


def test_add_ray_gives_the_digest_of_add_and_leaves_nothing_when_known(ray_cluster, store):
    """Every column type, nulls, NaN and a key: add_ray's digest is add's; known content writes no data."""
    import ray.data

    rng = np.random.default_rng(5)
    n = 5000
    table = pa.table({
        "id": rng.permutation(n),
        "f": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)), mask=rng.random(n) < 0.05),
        "s": pa.array([f"s{i % 97}\x00{i % 3}" if i % 11 else None for i in range(n)]),
        "l": pa.array([[int(x) for x in rng.integers(0, 4, i % 4)] if i % 13 else None for i in range(n)],
                      pa.list_(pa.int32())),
        "when": ts(rng.integers(-100, 100, n)),
    })
    blocks = [table.slice(i, 900) for i in range(0, n, 900)]
    for key in ((), ("s", "id")):
        streamed = store.datasets.add_ray(ray.data.from_arrow(blocks), name=f"streamed{len(key)}", key=key)
        assert streamed.digest == canonical_digest(table, key)
        assert canonical_digest(store.datasets.read(streamed), key) == streamed.digest
    first = store.datasets.get("streamed0")
    again = store.datasets.add_ray(ray.data.from_arrow(blocks[::-1]), name="streamed0")
    assert (again.digest, again.version) == (first.digest, 1)
    copy = store.datasets.add_ray(ray.data.from_arrow(blocks), name="copy")
    assert copy.digest == first.digest
    folders = Path(store.home) / "datasets"
    assert sorted(p.name for p in folders.iterdir()) == ["streamed0.streamed", "streamed2.streamed"]
    assert [len(list(p.iterdir())) for p in sorted(folders.iterdir())] == [1, 1]


class PeakMemory:
    """The driver's private memory sampled while a block runs: its growth at peak.

    Private is RSS less shared pages: blocks fetched from Ray's object store are mapped
    from shared memory, whose size the object store bounds (256 MiB in these tests).
    """

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self.start = self.peak = self._private()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _private(self):
        info = self._process.memory_info()
        return info.rss - info.shared

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, self._private())
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    @property
    def growth(self):
        return self.peak - self.start


@pytest.mark.slow
def test_ten_million_entity_rows_never_come_to_the_driver(ray_cluster, store):
    """10 M entity rows from a Ray Dataset: recorded as a version while the driver's memory grows by a small bounded amount."""
    import ray.data

    n, users = 10_000_000, 200_000
    add_view(store, users=users, events=400_000)

    def generate(batch):  # defined here so that Ray ships it by value to workers that cannot import tests
        ids = batch["id"].to_numpy()
        return pa.table({"user": (ids * 2654435761) % users, "label": ids % 2,
                         "event_timestamp": pa.array((ids % 5500) * 10**6).cast(pa.timestamp("us", tz="UTC"))})

    rows = ray.data.range(n, override_num_blocks=20).map_batches(generate, batch_format="pyarrow")
    with PeakMemory() as memory:
        result = store.features.get_historical_features(rows, "spend", name="big")
    assert result.version.num_rows == n
    data_bytes = n * 8 * 4  # user, time, label, amount: 8 bytes each, not counting the tag
    # Measured: about 60 MiB of 305 MiB, a few batches in flight; collecting the rows would need all of it.
    assert memory.growth < data_bytes / 3, f"driver grew by {memory.growth / 2**20:.0f} MiB"
    sample = store.datasets.lance(result.version).head(1000)
    assert sample.num_rows == 1000 and sample.column("amount").null_count < 1000
