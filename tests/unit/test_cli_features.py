"""`factory features` as a user drives it: register, build a training set, serve online."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from factory.errors import InvalidInputError
from factory.runtime.cli import app

runner = CliRunner()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(store):
    """Two customers; customer 1's spend changes at noon."""
    table = pa.table({
        "customer_id": pa.array([1, 1, 2], pa.int64()),
        "ts": pa.array([T0.replace(hour=9), T0.replace(hour=12), T0.replace(hour=10)], pa.timestamp("us", tz="UTC")),
        "spend": pa.array([10.0, 99.0, 5.0]),
    })
    return store.datasets.add(table, name="spend-events", key=["customer_id", "ts"])


def test_register_historical_materialize_get_online(store, tmp_path):
    """The CLI registers a view, joins point-in-time, and serves the same values online."""
    _events(store)
    view = tmp_path / "spend.yaml"
    view.write_text("name: spend\nentities: [customer_id]\ntimestamp: ts\nttl: P1D\nfeatures: [spend]\n"
                    "source: spend-events\n")
    home = ["--home", str(store.home)]
    res = runner.invoke(app, ["features", "register", str(view), *home, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["name"] == "spend"
    parents = store.lineage.parents(json.loads(res.output)["digest"])
    assert [store.artifacts.get(p).name for p in parents if store.artifacts.get(p).kind == "external"] == ["spend.yaml"]

    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({
        "customer_id": pa.array([1, 1, 2], pa.int64()),
        "event_timestamp": pa.array([T0.replace(hour=11), T0.replace(hour=13), T0.replace(hour=9)],
                                    pa.timestamp("us", tz="UTC")),
    }), rows)
    res = runner.invoke(app, ["features", "historical", str(rows), "--view", "spend", "--engine", "local", *home, "--json"])
    assert res.exit_code == 0, res.output
    digest = json.loads(res.output)["digest"]
    training = store.datasets.read(digest).sort_by([("customer_id", "ascending"), ("event_timestamp", "ascending")])
    assert training.column("spend").to_pylist() == [10.0, 99.0, None]

    res = runner.invoke(app, ["features", "materialize", "spend", "--up-to", "2026-01-02T00:00:00Z", *home, "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["features", "get-online", "spend", "1", "2", "--at", "2026-01-01T11:00:00Z", *home, "--json"])
    assert res.exit_code == 0, res.output
    assert [r["spend"] for r in json.loads(res.output)] == [10.0, 5.0]


def test_naive_time_is_refused_with_a_fix(store):
    """A time without a zone is bad input that names the fix."""
    res = runner.invoke(app, ["features", "materialize", "spend", "--up-to", "2026-01-02T00:00:00",
                              "--home", str(store.home)])
    assert res.exit_code != 0
    assert "no time zone" in str(res.exception)


def test_a_naive_view_materializes_with_assume_utc(store, tmp_path):
    """--assume-utc lets a view with zone-less times be joined and served; without it the error names the flag."""
    naive = pa.array([T0.replace(tzinfo=None, hour=9)], pa.timestamp("us"))
    store.datasets.add(pa.table({"customer_id": pa.array([1], pa.int64()), "ts": naive, "spend": [10.0]}),
                       name="naive-events")
    view = tmp_path / "spend.yaml"
    view.write_text("name: spend\nentities: [customer_id]\ntimestamp: ts\nttl: P1D\nfeatures: [spend]\n"
                    "source: naive-events\n")
    home = ["--home", str(store.home)]
    assert runner.invoke(app, ["features", "register", str(view), *home]).exit_code == 0
    res = runner.invoke(app, ["features", "materialize", "spend", "--up-to", "2026-01-02T00:00:00Z", *home])
    assert res.exit_code != 0 and "assume_utc" in str(res.exception)
    res = runner.invoke(app, ["features", "materialize", "spend", "--up-to", "2026-01-02T00:00:00Z", "--assume-utc",
                              *home])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["features", "get-online", "spend", "1", "--at", "2026-01-01T10:00:00Z", *home, "--json"])
    assert [r["spend"] for r in json.loads(res.output)] == [10.0]
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"customer_id": pa.array([1], pa.int64()),
                             "event_timestamp": pa.array([T0.replace(hour=10)], pa.timestamp("us", tz="UTC"))}), rows)
    res = runner.invoke(app, ["features", "historical", str(rows), "--view", "spend", "--engine", "local",
                              "--assume-utc", *home, "--json"])
    assert res.exit_code == 0, res.output
    assert store.datasets.read(json.loads(res.output)["digest"]).column("spend").to_pylist() == [10.0]


def test_log_find_shows_one_requests_rows(store):
    """`features log find` prints the rows logged for a request; an unknown id is a user error that names it."""
    from factory.store.features import FeatureLog

    log = FeatureLog(store)
    log.append([{"request_id": f"r{i}", "model": "m", "ts": T0, "customer_id": i, "spend": 1.0 * i,
                 "prediction": 0.5} for i in range(5)])
    home = ["--home", str(store.home)]
    assert runner.invoke(app, ["features", "log", "optimize", *home]).exit_code == 0
    res = runner.invoke(app, ["features", "log", "find", "r3", *home, "--json"])
    assert res.exit_code == 0, res.output
    assert [(r["customer_id"], r["spend"]) for r in json.loads(res.output)] == [(3, 3.0)]
    res = runner.invoke(app, ["features", "log", "find", "r3", *home])
    assert res.exit_code == 0 and "3.0" in res.output
    res = runner.invoke(app, ["features", "log", "find", "nope", *home])
    assert isinstance(res.exception, InvalidInputError) and "no rows for request 'nope'" in str(res.exception)
