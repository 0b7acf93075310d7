"""The Ray Data engine of the point-in-time join gives the in-process engine's answers."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from factory.errors import InvalidInputError
from factory.store.features import _pit, _pit_ray
from factory.store.features import FeatureView


def ts(seconds, tz="UTC"):
    return pa.array([int(s) * 10**6 for s in seconds], pa.int64()).cast(pa.timestamp("us", tz=tz))


def random_events(rng, n, keys):
    event = rng.integers(0, 2000, n)
    event[1::5] = event[0::5][: len(event[1::5])]
    return pa.table({
        "user": pa.array([f"u{k}" for k in rng.integers(0, keys, n)]),
        "ts": ts(event),
        "created": ts(event + np.where(rng.random(n) < 0.3, rng.integers(1, 100, n), 0)),
        "x": rng.integers(0, 4, n).astype(float),
        "y": pa.array(rng.integers(0, 9, n), mask=rng.random(n) < 0.1),
    })


@pytest.mark.parametrize("partitions", [5, None], ids=["shuffled", "broadcast"])
@pytest.mark.parametrize("allow_backfill", [False, True])
def test_ray_engine_equals_local_on_random_data(ray_cluster, allow_backfill, partitions):
    """Partitioned by entity over Ray Data, or against the whole view, every row's features equal the in-process join's, in order."""
    import ray.data

    rng = np.random.default_rng(21)
    features = random_events(rng, 6000, 400)
    rows = pa.table({"user": pa.array([f"u{k}" for k in rng.integers(0, 420, 3000)], pa.large_string()),
                     "event_timestamp": ts(rng.integers(0, 2200, 3000))})
    spec = _pit.PitSpec("v", ("user",), "ts", "created", timedelta(seconds=300), ("x", "y"))
    local = _pit.join(rows, features, spec, allow_backfill=allow_backfill)
    # Shuffled blocks: storage order must not matter.
    shuffled = features.take(rng.permutation(features.num_rows))
    distributed = _pit_ray.join(rows, ray.data.from_arrow(shuffled).repartition(4), spec,
                                allow_backfill=allow_backfill, partitions=partitions)
    assert distributed.equals(local)
    assert local.column("x").null_count < rows.num_rows


def test_feature_store_runs_on_ray_when_asked(ray_cluster, store):
    """engine='ray' reads the view from its Lance dataset and gives the local answer."""
    rng = np.random.default_rng(8)
    source = store.datasets.add(random_events(rng, 2000, 100), name="events")
    store.features.register(FeatureView(name="v", entities=("user",), timestamp="ts", created_timestamp="created",
                                        ttl=timedelta(seconds=500), features=("x", "y"), source=source.digest))
    rows = pa.table({"user": [f"u{k}" for k in rng.integers(0, 110, 500)], "event_timestamp": ts(rng.integers(0, 2100, 500))})
    on_ray = store.features.get_historical_features(rows, "v", engine="ray", record=False).table
    local = store.features.get_historical_features(rows, "v", engine="local", record=False).table
    assert on_ray.equals(local)


def test_ray_engine_reports_bad_input_before_shuffling(ray_cluster):
    """A key of the wrong kind is refused up front with the column and both types."""
    import ray.data

    features = random_events(np.random.default_rng(0), 10, 3)
    rows = pa.table({"user": [1], "event_timestamp": ts([5])})
    spec = _pit.PitSpec("v", ("user",), "ts", "created", timedelta(seconds=300), ("x",))
    with pytest.raises(InvalidInputError, match="entity column 'user' is int64 .* but string"):
        _pit_ray.join(rows, ray.data.from_arrow(features), spec)
