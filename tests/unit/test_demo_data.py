"""The demo's generated credit book: realistic shape, deterministic, and labels that follow point-in-time features."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.runtime._demo_data import ENTITY, FEATURES, LABEL, SENSITIVE, TTL, ACTIVITY, PROFILE, corrupt_labels, generate
from factory.settings import Settings
from factory.store import Store
from factory.store.features import FeatureView


def test_the_book_has_timestamps_an_entity_key_and_a_sensitive_attribute():
    """The applications carry a UTC timestamp, the customer key, gender and a 0/1 label with a plausible rate."""
    book = generate(300, 900, seed=1)
    apps = book.applications
    assert apps.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert apps.schema.field(ENTITY).type == pa.int64()
    assert set(apps[SENSITIVE].to_pylist()) == {"female", "male"}
    rate = pc.mean(apps[LABEL]).as_py()
    assert 0.05 < rate < 0.5
    assert book.profiles.num_rows == 600 and book.activity.num_rows == 1200


def test_the_same_seed_gives_the_same_rows_and_another_month_other_rows():
    """A seeded generator: the demo's dataset digests are the same on every run, and month two is new data."""
    a, b = generate(100, 200, seed=3), generate(100, 200, seed=3)
    assert a.applications.equals(b.applications) and a.profiles.equals(b.profiles)
    later = generate(100, 200, seed=3, month=1)
    assert pc.min(later.applications["ts"]).as_py() > pc.max(a.applications["ts"]).as_py()


def test_a_point_in_time_join_gives_the_features_the_labels_were_drawn_from(tmp_path):
    """The store's PIT join reproduces exactly the as-of features the generator used: no leak, no nulls."""
    from factory.runtime._demo_data import _as_of

    home = str(tmp_path / "home")
    store = Store(home, settings=Settings(home=home))
    book = generate(200, 500, seed=5)
    profiles = store.datasets.add(book.profiles, name="p", key=[ENTITY, "ts"])
    activity = store.datasets.add(book.activity, name="a", key=[ENTITY, "ts"])
    for name, feats, src in (("profile", PROFILE, profiles), ("activity", ACTIVITY, activity)):
        store.features.register(FeatureView(name=name, entities=(ENTITY,), timestamp="ts", ttl=TTL,
                                            features=feats, source=src.digest))
    joined = store.features.get_historical_features(book.applications, ["profile", "activity"], timestamp="ts",
                                                    record=False).table
    who = book.applications[ENTITY].to_numpy()
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    when = book.applications["ts"].cast(pa.int64()).to_numpy() - start
    truth = _as_of(book.profiles, book.activity, who, when)
    for name in FEATURES:
        assert joined[name].null_count == 0
        np.testing.assert_allclose(joined[name].to_numpy(), truth[name], rtol=1e-6)


def test_corrupted_labels_are_inverted_only_above_the_threshold():
    """The faulty candidate's data differs from the truth exactly on high-utilisation rows."""
    table = pa.table({"utilization": pa.array([0.1, 0.8, 0.9, 0.5], pa.float32()), LABEL: pa.array([0, 0, 1, 1])})
    out = corrupt_labels(table, above=0.75)
    assert out[LABEL].to_pylist() == [0, 1, 0, 1]
