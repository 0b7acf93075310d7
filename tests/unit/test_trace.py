"""``factory trace``: one logged request id leads to the model, its gates, its training run and all its data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from factory.errors import NotFoundError
from factory.runtime._trace import trace
from factory.runtime.cli import app

from factory_kit import MODEL, history, log_requests


@pytest.fixture
def traced(tmp_path):
    h = history(tmp_path, models=1)
    from factory.serve._record import DeploymentRecord, write_record

    write_record(h.store, DeploymentRecord(name=MODEL, model=MODEL, env="prod"), expected=None, reason="test")
    log_requests(h.store, h.models[0], [f"req-{i}" for i in range(50)])
    return h


def test_a_request_traces_back_to_gates_run_and_source_data(traced):
    """The trace names the answering package, its signed gate results, the run, config, code, env and every dataset."""
    found = trace(traced.store, "req-17")
    assert found.model["digest"] == traced.models[0]
    assert found.rows[0]["request_id"] == "req-17" and found.log == f"inference-{MODEL}"
    assert {g["policy"] for g in found.gates} == {"contract", "security"}
    assert all(g["verified"] and g["verdict"] == "pass" for g in found.gates)
    assert found.run["run_id"] == traced.run_id and found.run["state"] == "succeeded"
    assert found.config["digest"] == traced.config
    assert found.code["digest"] == traced.code and found.environment["digest"] == traced.environment
    assert found.training_set["digest"] == traced.training_set
    assert sorted(v["digest"] for v in found.feature_views) == sorted(traced.views)
    assert {d["digest"] for d in found.datasets} == set(traced.sources)


def test_the_first_trace_indexes_the_request_id(traced):
    """Serving appends without an index; after one trace the log answers by its BTREE index."""
    import lance

    from factory.store.features import FeatureLog

    flog = FeatureLog(traced.store, f"inference-{MODEL}")
    assert not lance.dataset(flog.uri).list_indices()
    trace(traced.store, "req-3")
    assert [i["fields"] for i in lance.dataset(flog.uri).list_indices()] == [["request_id"]]


def test_an_unknown_request_says_why_it_may_be_missing(traced):
    """A request id that was never logged is a NotFoundError that mentions sampling."""
    with pytest.raises(NotFoundError, match="sample_rate"):
        trace(traced.store, "nope")


def test_the_cli_shows_one_tree_and_json(traced):
    """`factory trace ID` prints the chain; --json is machine-readable; an unknown id exits 2 in one line."""
    runner = CliRunner()
    home = ["--home", traced.store.home]
    shown = runner.invoke(app, ["trace", "req-5", *home])
    assert shown.exit_code == 0, shown.output
    assert traced.models[0] in shown.output and "training set" in shown.output and "feature view" in shown.output
    data = json.loads(runner.invoke(app, ["trace", "req-5", "--json", *home]).output)
    assert data["run"]["run_id"] == traced.run_id
    missing = subprocess.run([sys.executable, "-m", "factory.runtime._entry", "trace", "nope", *home],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope" in missing.stderr
