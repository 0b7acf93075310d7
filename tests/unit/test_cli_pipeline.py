"""``factory run --local``, ``factory status`` and ``factory cancel`` as a user runs them (no Ray)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from factory.errors import InvalidInputError, PipelineFailedError
from factory.runtime.cli import app

runner = CliRunner()


def _yaml(tmp_path, body: str):
    path = tmp_path / "pipeline.yaml"
    path.write_text(body)
    return str(path)


GOOD = """
name: hello
steps:
  - name: greet
    type: user
    function: pipeline_kit:make
    config: {text: hello}
  - name: twice
    type: user
    function: pipeline_kit:join
    inputs: {a: greet.blob, b: greet.blob}
"""


@pytest.fixture
def home(store, monkeypatch):
    monkeypatch.setenv("FACTORY_CATALOG", store.settings.catalog)
    return store.home


def test_run_local_then_status_shows_each_step_with_its_digests(home, tmp_path):
    """A YAML pipeline runs to the end, and status lists its steps, states and output digests."""
    result = runner.invoke(app, ["run", _yaml(tmp_path, GOOD), "--local", "--json", "--home", home])
    assert result.exit_code == 0, result.output
    ran = json.loads(result.output)
    assert ran["state"] == "succeeded" and [s["state"] for s in ran["steps"]] == ["succeeded", "succeeded"]
    shown = runner.invoke(app, ["status", ran["run"], "--home", home])
    assert shown.exit_code == 0 and "greet" in shown.output and "sha256:" in shown.output
    listed = runner.invoke(app, ["status", "--json", "--home", home])
    assert [r["run"] for r in json.loads(listed.output)] == [ran["run"]]
    again = json.loads(runner.invoke(app, ["run", _yaml(tmp_path, GOOD), "--local", "--json", "--home", home]).output)
    assert [s["state"] for s in again["steps"]] == ["reused", "reused"]


def test_a_bad_pipeline_is_refused_naming_the_step_and_field(home, tmp_path):
    """A typo in a step is refused before anything runs, naming the step and the field."""
    bad = GOOD.replace("inputs: {a: greet.blob, b: greet.blob}", "inputs: {a: greet.blob, b: nothere.blob}")
    result = runner.invoke(app, ["run", _yaml(tmp_path, bad), "--local", "--home", home])
    assert isinstance(result.exception, InvalidInputError)
    assert "step 'twice'" in str(result.exception) and "nothere" in str(result.exception)


def test_a_failed_run_says_which_step_and_why(home, tmp_path):
    """A failing step ends 'factory run' with the step's name and error."""
    failing = GOOD.replace("pipeline_kit:join", "pipeline_kit:fail")
    result = runner.invoke(app, ["run", _yaml(tmp_path, failing), "--local", "--json", "--home", home])
    assert isinstance(result.exception, PipelineFailedError)
    assert "step 'twice'" in str(result.exception) and "broken" in str(result.exception)


def test_status_of_a_run_that_is_not_a_pipeline_is_refused(home, store):
    """Asking status of a training run says it is not a pipeline run."""
    other = store.runs.start("training", config={})
    result = runner.invoke(app, ["status", other.id, "--home", home])
    assert isinstance(result.exception, InvalidInputError) and "not a pipeline run" in str(result.exception)
