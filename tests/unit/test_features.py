"""Feature views in the store: registration, ingestion, training sets and their lineage."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from factory.errors import InvalidInputError, NotFoundError
from factory.store import ArtifactKind
from factory.store.features import FeatureView


def ts(seconds):
    """Whole seconds since the epoch as UTC microsecond timestamps."""
    return pa.array([None if s is None else int(s) * 10**6 for s in seconds], pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def add_view(store, name="spend", rows=None, features=("amount",), created=True, ttl=timedelta(seconds=100)):
    """A dataset of events for users 1 and 2 and a registered view over it."""
    rows = rows or {"user": [1, 1, 2], "ts": ts([10, 20, 15]), "created": ts([10, 20, 15]), "amount": [1.0, 2.0, 3.0]}
    if not created:
        rows = {k: v for k, v in rows.items() if k != "created"}
    source = store.datasets.add(pa.table(rows), name=f"{name}-events")
    view = FeatureView(name=name, entities=("user",), timestamp="ts", created_timestamp="created" if created else None,
                       ttl=ttl, features=features, source=source.digest)
    return view, store.features.register(view)


def test_register_records_an_artifact_pinned_to_its_source(store):
    """The view is a feature-view artifact whose parent is its dataset version, under feature-view/<name>."""
    view, artifact = add_view(store)
    assert artifact.kind == ArtifactKind.FEATURE_VIEW
    assert artifact.parents == (view.source,)
    assert artifact.meta(FeatureView) == view
    assert store.refs.get("feature-view/spend") == artifact.digest
    assert store.features.get("spend").view == view
    assert store.features.register(view).digest == artifact.digest


def test_register_checks_the_view_against_its_source(store):
    """A column missing from the source, or a non-timestamp time column, is refused with the fix."""
    source = store.datasets.add(pa.table({"user": [1], "ts": [5], "amount": [1.0]}), name="raw")
    bad_time = FeatureView(name="v", entities=("user",), timestamp="ts", ttl=timedelta(1), features=("amount",),
                           source=source.digest)
    with pytest.raises(InvalidInputError, match="'ts'.*not a timestamp"):
        store.features.register(bad_time)
    missing = bad_time.model_copy(update={"features": ("nope",)})
    with pytest.raises(InvalidInputError, match="no column.*nope"):
        store.features.register(missing)


def test_feature_view_config_is_strict():
    """A non-positive TTL, a column in two roles or an unknown field is a validation error."""
    base = {"name": "v", "entities": ("u",), "timestamp": "t", "ttl": timedelta(1), "features": ("x",),
            "source": "sha256:" + "0" * 64}
    FeatureView(**base)
    with pytest.raises(ValidationError, match="ttl must be positive"):
        FeatureView(**{**base, "ttl": timedelta(0)})
    with pytest.raises(ValidationError, match="more than one role"):
        FeatureView(**{**base, "features": ("u",)})
    with pytest.raises(ValidationError):
        FeatureView(**base, owner="me")


def test_historical_features_come_back_in_order_and_are_recorded(store):
    """Every entity row once, in order, duplicates kept; the result is a dataset whose parents are the views."""
    _, spend = add_view(store)
    _, clicks = add_view(store, "clicks", {"user": [2], "ts": ts([5]), "created": ts([5]), "n": [7]}, features=("n",))
    rows = pa.table({"user": [2, 1, 1, 2, 3], "event_timestamp": ts([16, 25, 12, 16, 30]), "label": [1, 0, 1, 1, 0]})
    result = store.features.get_historical_features(rows, ["spend", "clicks"])
    assert result.table.column_names == ["user", "event_timestamp", "label", "amount", "n"]
    assert result.table.column("amount").to_pylist() == [3.0, 2.0, 1.0, 3.0, None]
    assert result.table.column("n").to_pylist() == [7, None, None, 7, None]
    assert result.table.column("label").to_pylist() == [1, 0, 1, 1, 0]
    assert set(store.artifacts.get(result.version.digest).parents) == {spend.digest, clicks.digest}
    assert result.version.num_rows == 5


def test_entity_rows_by_dataset_reference_become_a_parent(store):
    """Entity rows given as a dataset version are read from the store and linked in the lineage."""
    add_view(store)
    labels = store.datasets.add(pa.table({"user": [1], "event_timestamp": ts([30])}), name="labels")
    result = store.features.get_historical_features("labels", "spend", name="train")
    assert result.table.column("amount").to_pylist() == [2.0]
    assert labels.digest in store.artifacts.get(result.version.digest).parents


def test_colliding_feature_names_are_prefixed_with_the_view(store):
    """The same feature name from two views comes back as <view>__<feature>; full_names prefixes all."""
    add_view(store, "a")
    add_view(store, "b", {"user": [1], "ts": ts([1]), "created": ts([1]), "amount": [9.0]})
    rows = pa.table({"user": [1], "event_timestamp": ts([50])})
    both = store.features.get_historical_features(rows, ["a", "b"], record=False)
    assert both.table.column_names == ["user", "event_timestamp", "a__amount", "b__amount"]
    assert both.version is None
    alone = store.features.get_historical_features(rows, "a", full_names=True, record=False)
    assert alone.table.column_names == ["user", "event_timestamp", "a__amount"]


def test_entity_rows_as_pandas_and_dicts(store):
    """pandas frames and lists of dicts are accepted as entity rows."""
    import pandas as pd

    add_view(store)
    frame = pd.DataFrame({"user": [1], "event_timestamp": pd.to_datetime([30], unit="s", utc=True)})
    assert store.features.get_historical_features(frame, "spend", record=False).table.column("amount").to_pylist() == [2.0]
    rows = [{"user": 1, "event_timestamp": ts([30])[0].as_py()}]
    assert store.features.get_historical_features(rows, "spend", record=False).table.column("amount").to_pylist() == [2.0]


def test_ingest_is_idempotent_by_content(store):
    """The same batch twice gives one new version; the old version still answers as before."""
    _, artifact = add_view(store)
    batch = pa.table({"user": [2], "ts": ts([40]), "created": ts([40]), "amount": [5.0]})
    v2 = store.features.ingest("spend", batch)
    v3 = store.features.ingest("spend", batch)
    assert v2.digest == v3.digest != artifact.digest
    assert store.datasets.get(v2.view.source).num_rows == 4
    assert [v.digest for v in store.features.versions("spend")] == [artifact.digest, v2.digest]
    rows = pa.table({"user": [2], "event_timestamp": ts([50])})
    assert store.features.get_historical_features(rows, "spend", record=False).table.column("amount").to_pylist() == [5.0]
    old = store.features.get_historical_features(rows, "spend@1", record=False)
    assert old.table.column("amount").to_pylist() == [3.0]


def test_ingest_rejects_a_batch_with_other_columns(store):
    """A batch must have the source's columns, no more, no fewer."""
    add_view(store)
    with pytest.raises(InvalidInputError, match="missing: created, amount"):
        store.features.ingest("spend", pa.table({"user": [1], "ts": ts([1])}))


def test_backfilled_rows_do_not_leak_into_earlier_training_rows(store):
    """A correction created later than a training row stays invisible to it unless backfill is allowed."""
    add_view(store)
    store.features.ingest("spend", pa.table({"user": [1], "ts": ts([22]), "created": ts([500]), "amount": [99.0]}))
    rows = pa.table({"user": [1, 1], "event_timestamp": ts([30, 510])})
    plain = store.features.get_historical_features(rows, "spend", record=False)
    assert plain.table.column("amount").to_pylist() == [2.0, None]  # at 510 the event at 22 is past its TTL
    leaky = store.features.get_historical_features(rows, "spend", allow_backfill=True, record=False)
    assert leaky.table.column("amount").to_pylist() == [99.0, None]


def test_unknown_views_and_bad_engines_are_clear_errors(store):
    """An unregistered view is NotFoundError; an unknown engine names the choices."""
    rows = pa.table({"user": [1], "event_timestamp": ts([1])})
    with pytest.raises(NotFoundError, match="no feature view named 'nope'"):
        store.features.get_historical_features(rows, "nope")
    add_view(store)
    with pytest.raises(InvalidInputError, match="'auto', 'local' or 'ray'"):
        store.features.get_historical_features(rows, "spend", engine="spark")


def test_cli_register_historical_materialize_and_lookup(store, tmp_path, monkeypatch):
    """The CLI verbs register a YAML view, build a training set and serve a key online."""
    import pyarrow.parquet as pq

    from factory.runtime import _cli_features

    monkeypatch.setattr(_cli_features, "open_store", lambda home=None: store)
    store.datasets.add(pa.table({"user": [1, 2], "ts": ts([1, 2]), "amount": [1.0, 2.0]}), name="events")
    (tmp_path / "v.yaml").write_text("name: spend\nentities: [user]\ntimestamp: ts\nttl: 3600\nfeatures: [amount]\nsource: events\n")
    pq.write_table(pa.table({"user": [2], "event_timestamp": ts([10])}), tmp_path / "rows.parquet")
    runner = CliRunner()
    assert runner.invoke(_cli_features.app, ["register", str(tmp_path / "v.yaml")]).exit_code == 0
    out = runner.invoke(_cli_features.app, ["historical", str(tmp_path / "rows.parquet"), "--view", "spend", "--json"])
    assert out.exit_code == 0, out.output
    assert store.datasets.read(store.datasets.get("historical-features")).column("amount").to_pylist() == [2.0]
    assert runner.invoke(_cli_features.app, ["materialize", "spend", "--up-to", "2030-01-01T00:00:00Z"]).exit_code == 0
    got = runner.invoke(_cli_features.app, ["get-online", "spend", "2", "--at", "1970-01-01T00:00:05Z", "--json"])
    assert got.exit_code == 0, got.output
    assert '"amount": 2.0' in got.output
    bad = runner.invoke(_cli_features.app, ["get-online", "spend", "x"])
    assert bad.exit_code != 0 and "not an integer" in str(bad.exception)


def test_random_training_set_equals_the_engine_on_the_stored_source(store):
    """Through the store (Lance round trip included) the join equals the engine on the original rows."""
    from factory.store.features import _pit

    rng = np.random.default_rng(4)
    n = 3000
    event = rng.integers(0, 10_000, n)
    rows = {"user": rng.integers(0, 200, n), "ts": ts(event), "created": ts(event + rng.integers(0, 50, n)),
            "amount": rng.integers(0, 4, n).astype(float)}
    view, _ = add_view(store, rows=rows)
    entity = pa.table({"user": rng.integers(0, 210, 2000), "event_timestamp": ts(rng.integers(0, 10_200, 2000))})
    got = store.features.get_historical_features(entity, "spend", record=False).table.column("amount")
    expected = _pit.join(entity, pa.table(rows), view.spec()).column("amount")
    assert got.equals(expected)


def test_ingest_refuses_naive_times_for_an_aware_source(store):
    """A batch whose timestamps lack the source's time zone is refused rather than read as UTC."""
    add_view(store)
    naive = pa.array([30 * 10**6], pa.int64()).cast(pa.timestamp("us"))
    batch = pa.table({"user": [1], "ts": naive, "created": naive, "amount": [1.0]})
    with pytest.raises(InvalidInputError, match="same time zone"):
        store.features.ingest("spend", batch)


def test_views_can_be_given_as_definitions(store):
    """A FeatureView object selects its registered latest version."""
    view, artifact = add_view(store)
    rows = pa.table({"user": [1], "event_timestamp": ts([30])})
    result = store.features.get_historical_features(rows, view, record=False)
    assert result.views == (artifact.digest,)
    assert result.table.column("amount").to_pylist() == [2.0]
