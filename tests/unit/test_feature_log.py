"""Serving's feature log: appended rows read back, snapshot as a dataset, and measure skew."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from factory.errors import InvalidInputError, NotFoundError
from factory.store.features import FeatureLog
from factory.store.features import FeatureView


def ts(seconds, tz="UTC"):
    return pa.array([int(s) * 10**6 for s in seconds], pa.int64()).cast(pa.timestamp("us", tz=tz))


def logged(request_ids, users, times, amounts, model):
    return pa.table({"request_id": request_ids, "model": [model] * len(users), "ts": ts(times), "user": users,
                     "amount": amounts, "prediction": [0.5] * len(users)})


@pytest.fixture
def store(any_store):
    """The store of each test here: a local home, then an S3 home."""
    return any_store


@pytest.fixture
def view(store):
    """A view with one value per user, valid for 100 s."""
    source = store.datasets.add(pa.table({"user": [1, 2], "ts": ts([10, 10]), "amount": [1.0, 2.0]}), name="events")
    store.features.register(FeatureView(name="spend", entities=("user",), timestamp="ts", ttl=timedelta(seconds=100),
                                        features=("amount",), source=source.digest))
    return "spend"


def test_appends_read_back_and_snapshot_as_a_dataset(store):
    """Two appends read back as one table; the snapshot is a dataset version whose parent is the model."""
    model = store.put_blob(b"weights", name="model").digest
    log = FeatureLog(store)
    assert log.append(logged(["r1"], [1], [20], [1.0], model)) == 1
    log.append(logged(["r2", "r3"], [2, 1], [30, 40], [2.0, 1.0], model))
    assert sorted(log.read().column("request_id").to_pylist()) == ["r1", "r2", "r3"]
    version = log.to_dataset()
    assert version.num_rows == 3 and version.name == "feature-log-serving"
    assert store.artifacts.get(version.digest).parents == (model,)


def test_bad_rows_are_refused_with_the_fix(store):
    """Missing required columns, a naive time or a different schema are clear errors."""
    log = FeatureLog(store, "svc")
    with pytest.raises(InvalidInputError, match="request_id, model"):
        log.append([{"ts": None, "prediction": 1}])
    bad_time = logged(["r"], [1], [1], [1.0], "m").set_column(2, "ts", ts([1], tz=None))
    with pytest.raises(InvalidInputError, match="time zone"):
        log.append(bad_time)
    log.append(logged(["r"], [1], [1], [1.0], "m"))
    with pytest.raises(InvalidInputError, match="do not match"):
        log.append(logged(["r"], [1], [1], [1.0], "m").drop_columns(["amount"]))
    with pytest.raises(NotFoundError):
        FeatureLog(store, "empty").read()


def test_skew_counts_served_values_that_differ_from_training(store, view):
    """Served values equal to the offline join count zero; a wrong or missing value counts one each."""
    log = FeatureLog(store)
    log.append(logged(["a", "b", "c", "d"], [1, 2, 1, 2], [20, 20, 50, 300], [1.0, 2.0, 1.0, None], "m"))
    assert log.skew(store.features, view).mismatches == {"amount": 0}
    log.append(logged(["e", "f"], [1, 2], [20, 20], [1.5, None], "m"))
    report = log.skew(store.features, view)
    assert report.mismatches == {"amount": 2}
    assert report.rows == 6 and report.rate("amount") == pytest.approx(2 / 6)
