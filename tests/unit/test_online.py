"""The online store: the same answers as the offline join, fast lookups, reload after restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from factory.errors import InvalidInputError, NotFoundError
from factory.settings import Settings
from factory.store import Store
from factory.store.features import FeatureStore, FeatureView
from factory.store.features._online import OnlineTable

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(seconds):
    return pa.array([None if s is None else int(s) * 10**6 for s in seconds], pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def random_view(store, rng, n=4000, entities=300, span=5000, name="v"):
    """Events with ties, late and null created times and null values, registered as a view."""
    event = rng.integers(0, span, n)
    event[1::7] = event[0::7][: len(event[1::7])]  # ties on event time
    late = np.where(rng.random(n) < 0.3, rng.integers(1, 200, n), 0)
    created = [None if rng.random() < 0.1 else int(e + d) for e, d in zip(event, late)]
    table = pa.table({
        "user": rng.integers(0, entities, n),
        "ts": ts(event),
        "created": ts(created),
        "x": pa.array(rng.integers(0, 5, n).astype(float), mask=rng.random(n) < 0.1),
        "tag": pa.array([f"t{i}" for i in rng.integers(0, 3, n)]),
    })
    source = store.datasets.add(table, name=f"{name}-events")
    view = FeatureView(name=name, entities=("user",), timestamp="ts", created_timestamp="created",
                       ttl=timedelta(seconds=400), features=("x", "tag"), source=source.digest)
    store.features.register(view)
    return table


def test_online_equals_offline_on_random_samples(store):
    """For thousands of random (entity, time) pairs the online answer is the offline one."""
    rng = np.random.default_rng(11)
    random_view(store, rng)
    store.features.materialize("v", up_to=EPOCH + timedelta(days=1))
    users = rng.integers(0, 320, 3000)
    times = rng.integers(-50, 5600, 3000)
    offline = store.features.get_historical_features(
        pa.table({"user": users, "event_timestamp": ts(times)}), "v", record=False
    ).table.select(["x", "tag"]).to_pylist()
    online = [store.features.get_online_features("v", [int(u)], at=EPOCH + timedelta(seconds=int(t)))[0]
              for u, t in zip(users, times)]
    assert online == offline
    assert sum(r["x"] is not None for r in online) > 500


def test_materialize_sees_only_rows_known_by_up_to(store):
    """Rows created after up_to are not served; what is served equals offline over the rows known then."""
    rng = np.random.default_rng(5)
    table = random_view(store, rng)
    up_to = EPOCH + timedelta(seconds=2500)
    store.features.materialize("v", up_to=up_to)
    created = table.column("created").combine_chunks()
    effective = pa.compute.coalesce(created, table.column("ts").combine_chunks())
    known = table.filter(pa.compute.less_equal(effective, pa.scalar(up_to, pa.timestamp("us", tz="UTC"))))
    spec = store.features.get("v").view.spec()
    from factory.store.features import _pit

    users, times = rng.integers(0, 300, 1000), rng.integers(2000, 3200, 1000)
    expected = _pit.join(pa.table({"user": users, "event_timestamp": ts(times)}), known, spec).to_pylist()
    got = [store.features.get_online_features("v", [int(u)], at=EPOCH + timedelta(seconds=int(t)))[0]
           for u, t in zip(users, times)]
    assert got == expected


def test_state_reloads_after_a_restart(store, tmp_path):
    """A fresh process on the same store serves the materialized view without recomputing it."""
    rng = np.random.default_rng(2)
    random_view(store, rng, n=500)
    store.features.materialize("v", up_to=EPOCH + timedelta(days=1))
    at = EPOCH + timedelta(seconds=3000)
    before = store.features.get_online_features("v", range(300), at=at)
    again = Store(store.home, settings=Settings(home=store.home))
    assert again.features.get_online_features("v", range(300), at=at) == before
    assert again.features.online_table("v").up_to == EPOCH + timedelta(days=1)


def test_default_time_is_the_clock_and_values_expire(store):
    """Without ``at`` lookups use the injected clock; past the TTL the value is gone."""
    source = store.datasets.add(pa.table({"user": ["a"], "ts": ts([100]), "x": [1.5]}), name="e")
    store.features.register(FeatureView(name="v", entities=("user",), timestamp="ts", ttl=timedelta(seconds=60),
                                        features=("x",), source=source.digest))
    now = [EPOCH + timedelta(seconds=120)]
    features = FeatureStore(store, clock=lambda: now[0])
    features.materialize("v")
    assert features.get_online_features("v", ["a", "b"]) == [{"x": 1.5}, {"x": None}]
    now[0] = EPOCH + timedelta(seconds=161)
    assert features.get_online_features("v", ["a"]) == [{"x": None}]


def test_composite_keys_as_tuples_or_dicts(store):
    """A two-column entity is looked up by tuple or by dict; a bare scalar is refused with the fix."""
    table = pa.table({"shop": ["s1", "s1"], "item": [1, 2], "ts": ts([1, 1]), "price": [3.0, 4.0]})
    source = store.datasets.add(table, name="prices")
    store.features.register(FeatureView(name="price", entities=("shop", "item"), timestamp="ts",
                                        ttl=timedelta(days=1), features=("price",), source=source.digest))
    store.features.materialize("price", up_to=EPOCH + timedelta(seconds=10))
    at = EPOCH + timedelta(seconds=5)
    got = store.features.get_online_features("price", [("s1", 2), {"shop": "s1", "item": 1}, ("s2", 1)], at=at)
    assert got == [{"price": 4.0}, {"price": 3.0}, {"price": None}]
    with pytest.raises(InvalidInputError, match="composite key"):
        store.features.get_online_features("price", ["s1"], at=at)


def test_several_views_in_one_lookup(store):
    """Two views merge into one dict per key; a name they share is prefixed by view."""
    for name, value in (("a", 1.0), ("b", 2.0)):
        source = store.datasets.add(pa.table({"user": [1], "ts": ts([1]), "x": [value], name: [value]}), name=f"{name}-src")
        store.features.register(FeatureView(name=name, entities=("user",), timestamp="ts", ttl=timedelta(days=1),
                                            features=("x", name), source=source.digest))
        store.features.materialize(name, up_to=EPOCH + timedelta(seconds=5))
    got = store.features.get_online_features(["a", "b"], [1], at=EPOCH + timedelta(seconds=2))
    assert got == [{"a__x": 1.0, "a": 1.0, "b__x": 2.0, "b": 2.0}]


def test_unmaterialized_view_and_naive_time_are_clear_errors(store):
    """Looking up a view never materialized, or at a naive time, says what to do."""
    with pytest.raises(NotFoundError, match="materialize"):
        store.features.get_online_features("v", [1])
    random_view(store, np.random.default_rng(0), n=50)
    store.features.materialize("v", up_to=EPOCH + timedelta(days=1))
    with pytest.raises(InvalidInputError, match="no time zone"):
        store.features.get_online_features("v", [1], at=datetime(2020, 1, 1))


def test_ipc_round_trip_keeps_every_answer():
    """Saved and reloaded bytes answer exactly like the table they came from."""
    from factory.store.features._online import materialize_table

    rng = np.random.default_rng(9)
    n = 2000
    table = pa.table({"user": pa.array([f"u{i}" for i in rng.integers(0, 100, n)]), "ts": ts(rng.integers(0, 1000, n)),
                      "x": rng.random(n)})
    view = FeatureView(name="v", entities=("user",), timestamp="ts", ttl=timedelta(seconds=90), features=("x",),
                       source="sha256:" + "0" * 64)
    online = materialize_table(table, view.spec(), EPOCH + timedelta(days=1))
    reloaded = OnlineTable.from_ipc(online.to_ipc())
    keys = [f"u{i}" for i in range(105)]
    for t in (0, 300, 999, 1100):
        assert reloaded.get(keys, EPOCH + timedelta(seconds=t)) == online.get(keys, EPOCH + timedelta(seconds=t))


def _spend_view(store, users=(20, 21)):
    source = store.datasets.add(pa.table({"user": pa.array(list(users), pa.int64()), "ts": ts([1] * len(users)),
                                          "amount": [5.0] * len(users)}), name="spend-events")
    store.features.register(FeatureView(name="spend", entities=("user",), timestamp="ts", ttl=timedelta(days=1),
                                        features=("amount",), source=source.digest))
    store.features.materialize("spend", up_to=EPOCH + timedelta(seconds=10))
    return EPOCH + timedelta(seconds=5)


@pytest.mark.parametrize("key, kind", [("20", "string"), (20.0, "double"), (True, "bool"), (b"20", "binary")])
def test_keys_of_the_wrong_type_are_refused_as_offline(store, key, kind):
    """A string, float or bool key on an int64 view is an error naming the column, both types and the fix."""
    at = _spend_view(store)
    with pytest.raises(InvalidInputError, match=rf"entity column 'user' is int64 .* but the key .* is {kind}.*give keys"):
        store.features.get_online_features("spend", [key], at=at)


def test_keys_of_the_right_type_still_match(store):
    """Python and numpy integers match; a null key matches nothing, as offline."""
    at = _spend_view(store)
    got = store.features.get_online_features("spend", [20, np.int64(21), np.int32(20), None, 22], at=at)
    assert got == [{"amount": 5.0}, {"amount": 5.0}, {"amount": 5.0}, {"amount": None}, {"amount": None}]


def test_composite_and_string_keys_are_checked_per_column(store):
    """Each column of a composite key, and a string view's key, is checked against its own type."""
    table = pa.table({"shop": ["s1"], "item": [1], "ts": ts([1]), "price": [3.0]})
    source = store.datasets.add(table, name="prices")
    store.features.register(FeatureView(name="price", entities=("shop", "item"), timestamp="ts",
                                        ttl=timedelta(days=1), features=("price",), source=source.digest))
    store.features.materialize("price", up_to=EPOCH + timedelta(seconds=10))
    at = EPOCH + timedelta(seconds=5)
    assert store.features.get_online_features("price", [("s1", 1)], at=at) == [{"price": 3.0}]
    with pytest.raises(InvalidInputError, match="entity column 'item' is int64"):
        store.features.get_online_features("price", [("s1", "1")], at=at)
    with pytest.raises(InvalidInputError, match="entity column 'shop' is string .* integer"):
        store.features.get_online_features("price", [{"shop": 1, "item": 1}], at=at)


def test_a_naive_view_is_served_online_as_it_joins_offline(store):
    """A view with zone-less times joins offline with assume_utc=True, and materializes the same way."""
    naive = pa.array([1 * 10**6, 50 * 10**6], pa.int64()).cast(pa.timestamp("us"))
    source = store.datasets.add(pa.table({"user": [1, 1], "ts": naive, "x": [1.0, 2.0]}), name="naive-events")
    store.features.register(FeatureView(name="naive", entities=("user",), timestamp="ts", ttl=timedelta(seconds=30),
                                        features=("x",), source=source.digest))
    times = [0, 10, 40, 60, 90]
    rows = pa.table({"user": [1] * len(times), "event_timestamp": ts(times)})
    offline = store.features.get_historical_features(rows, "naive", assume_utc=True, record=False)
    with pytest.raises(InvalidInputError, match="no time zone.*assume_utc=True"):
        store.features.materialize("naive", up_to=EPOCH + timedelta(days=1))
    store.features.materialize("naive", up_to=EPOCH + timedelta(days=1), assume_utc=True)
    online = [store.features.get_online_features("naive", [1], at=EPOCH + timedelta(seconds=t))[0] for t in times]
    assert online == offline.table.select(["x"]).to_pylist() == [{"x": None}, {"x": 1.0}, {"x": None}, {"x": 2.0},
                                                                  {"x": None}]


def test_ttl_bound_is_inclusive_online_as_offline(store):
    """Online, as offline, a value exactly TTL old is served and one microsecond older is not."""
    source = store.datasets.add(pa.table({"user": [1], "ts": ts([100]), "x": [1.0]}), name="e")
    store.features.register(FeatureView(name="v", entities=("user",), timestamp="ts", ttl=timedelta(seconds=10),
                                        features=("x",), source=source.digest))
    store.features.materialize("v", up_to=EPOCH + timedelta(days=1))
    edge = EPOCH + timedelta(seconds=110)
    assert store.features.get_online_features("v", [1], at=edge) == [{"x": 1.0}]
    assert store.features.get_online_features("v", [1], at=edge + timedelta(microseconds=1)) == [{"x": None}]
