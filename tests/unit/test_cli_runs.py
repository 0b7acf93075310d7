"""``factory runs list/show`` as a user runs them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from factory.errors import InvalidInputError, NotFoundError
from factory.runtime._cli_runs import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=True)


def _two_runs(store):
    data = store.put_blob(b"rows", name="rows.csv").digest
    done = store.runs.start("training", config={"lr": 0.1}, parents=[data], name="fraud", key="k1")
    done.log_metrics(0, {"loss": 0.9})
    done.log_metrics(1, {"loss": 0.3})
    done.output("model", store.blobs.put(b"weights"))
    done.finish()
    live = store.runs.start("gate-run", config={"policy": "[bold]quality"})
    return done, live


def test_list_shows_runs_as_a_table_and_json_filtered(store):
    """list shows every run with its state; filters narrow it; --json is machine-readable."""
    done, live = _two_runs(store)
    table = _run("list", "--home", store.home)
    assert table.exit_code == 0, table.output
    assert done.id in table.output and live.id in table.output and "succeeded" in table.output
    rows = json.loads(_run("list", "--state", "running", "--home", store.home, "--json").output)
    assert [r["id"] for r in rows] == [live.id]
    rows = json.loads(_run("list", "--kind", "training", "--since", "2000-01-01", "--home", store.home, "--json").output)
    assert [(r["id"], r["state"], r["key"]) for r in rows] == [(done.id, "succeeded", "k1")]


def test_show_gives_config_events_metrics_and_outputs(store):
    """show prints what a run was given and made; user text is shown as text, never as markup."""
    done, live = _two_runs(store)
    text = _run("show", done.id, "--home", store.home)
    assert text.exit_code == 0, text.output
    for part in ("succeeded", "loss", "0.3", "model", done.digest, '"lr": 0.1'):
        assert part in text.output
    info = json.loads(_run("show", done.id, "--home", store.home, "--json").output)
    assert info["outputs"] == {"model": done.outputs()["model"]} and [e["state"] for e in info["events"]] == [
        "running", "succeeded"]
    assert [(m["step"], m["value"]) for m in info["metrics"]] == [(0, 0.9), (1, 0.3)]
    assert "[bold]quality" in _run("show", live.id, "--home", store.home).output


def test_bad_input_is_a_user_error(store):
    """An unknown id, state or time is a one-line user error (exit 2 through the factory command)."""
    assert isinstance(_run("show", "nope", "--home", store.home).exception, NotFoundError)
    assert isinstance(_run("list", "--state", "done", "--home", store.home).exception, InvalidInputError)
    assert isinstance(_run("list", "--since", "yesterday", "--home", store.home).exception, InvalidInputError)


def test_show_lays_out_a_training_run_by_epoch_and_lists_a_sweeps_trials(store):
    """A training run's metrics read one row per epoch; a sweep's run lists its trial runs with their state."""
    sweep = store.runs.start("tune", config={"space": {}}, name="toy")
    trial = store.runs.start("train", config={"lr": 0.1}, parents=[sweep.digest], name="toy")
    trial.log_metrics(10, {"epoch": 1, "train_loss": 0.9, "val_loss": 1.1})
    trial.log_metrics(20, {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7})
    text = _run("show", trial.id, "--home", store.home).output
    assert "metrics per epoch (2)" in text
    rows = [line for line in text.splitlines() if "0.5" in line and "0.7" in line]
    assert len(rows) == 1 and "20" in rows[0]
    shown = _run("show", sweep.id, "--home", store.home)
    assert shown.exit_code == 0, shown.output
    assert "child runs (1)" in shown.output and trial.id in shown.output
    info = json.loads(_run("show", sweep.id, "--home", store.home, "--json").output)
    assert [c["id"] for c in info["children"]] == [trial.id]
