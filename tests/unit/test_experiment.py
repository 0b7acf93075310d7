"""Experiment namespaces: deterministic samples with lineage, pinned dependencies, tracking, and an
identity that cannot move staging or prod."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from factory.errors import InvalidInputError, RefProtectedError
from factory.runtime import get_experiment, list_experiments, sample_dataset, start_experiment
from factory.runtime.cli import app


@pytest.fixture
def customers(store):
    table = pa.table({"id": list(range(200)), "spend": [float(i % 17) for i in range(200)]})
    return store.datasets.add(table, name="customers", key=["id"])


def test_a_sample_is_deterministic_and_traces_back_to_its_source(store, customers):
    """The same version, size and seed give the same rows, stored as a version whose parent is the source."""
    one = sample_dataset(store, "customers", fraction=0.1, seed=7)
    two = sample_dataset(store, customers.digest, fraction=0.1, seed=7)
    other = sample_dataset(store, "customers", fraction=0.1, seed=8)
    assert one.digest == two.digest and one.num_rows == 20
    assert other.digest != one.digest
    assert customers.digest in store.lineage.ancestors(one.digest)
    assert set(store.datasets.read(one)["id"].to_pylist()) <= set(range(200))


def test_experiment_start_samples_pins_and_is_idempotent(store, customers):
    """Starting an experiment records its namespace, pinned environment and samples; again, the same one."""
    exp = start_experiment(store, "churn-lr", datasets=["customers"], rows=50, pip=["scikit-learn==1.5.2"])
    assert exp.namespace == "experiment-churn-lr" and exp.actor == "experiment:churn-lr"
    assert exp.runtime_env == {"pip": ["scikit-learn==1.5.2"]}
    sample = store.datasets.get(exp.datasets["customers"])
    assert sample.num_rows == 50 and sample.name == "churn-lr-customers"
    again = start_experiment(store, "churn-lr", datasets=["customers"], rows=50, pip=["scikit-learn==1.5.2"])
    assert again.run_id == exp.run_id and again.datasets == exp.datasets
    assert get_experiment(store, "churn-lr").run_id == exp.run_id
    assert [e.name for e in list_experiments(store)] == ["churn-lr"]


def test_unpinned_dependencies_and_bad_names_are_refused(store):
    """An unpinned dependency or a bad name is refused, saying how to write it."""
    with pytest.raises(InvalidInputError, match="pip.*not pinned"):
        start_experiment(store, "x", pip=["numpy"])
    with pytest.raises(InvalidInputError, match="not an experiment name"):
        start_experiment(store, "Bad Name")


def test_the_experiment_cannot_move_prod_or_staging(store, mlp_package):
    """An experiment's store is refused when it moves a prod or staging ref, and may register candidates."""
    exp = start_experiment(store, "sneaky")
    package = mlp_package()
    as_experiment = exp.store(store)
    with pytest.raises(RefProtectedError):
        as_experiment.refs.set("model/iris/prod", package.digest)
    with pytest.raises(RefProtectedError):
        as_experiment.refs.set("model/iris/staging", package.digest)
    candidate = f"model/iris/candidates/{package.digest.removeprefix('sha256:')[:12]}"
    as_experiment.refs.set(candidate, package.digest)
    assert store.refs.get(candidate) == package.digest


def test_tracking_records_the_experiment_and_its_samples(store, customers):
    """A tracked run of the experiment names it and has its samples among its inputs."""
    exp = start_experiment(store, "tracked", datasets=["customers"], fraction=0.5)
    with exp.track(store, "trial-1", params={"lr": 0.1}) as run:
        run.log_metrics({"loss": 0.5}, step=0)
    tracked = store.runs.list(kind="track")[-1]
    assert tracked.config["experiment"] == "tracked"  # a tracked run's config is its params
    assert exp.datasets["customers"] in tracked.parents


def test_cli_start_then_show(store, customers, monkeypatch):
    """'factory experiment start' prints its namespace and samples; 'show' finds it again."""
    monkeypatch.setenv("FACTORY_CATALOG", store.settings.catalog)
    runner = CliRunner()
    started = runner.invoke(app, ["experiment", "start", "cli-exp", "-d", "customers", "--rows", "10", "--json",
                                  "--home", store.home])
    assert started.exit_code == 0, started.output
    data = json.loads(started.output)
    assert data["namespace"] == "experiment-cli-exp" and set(data["datasets"]) == {"customers"}
    shown = runner.invoke(app, ["experiment", "show", "cli-exp", "--home", store.home])
    assert shown.exit_code == 0 and "experiment-cli-exp" in shown.output and "FACTORY_ACTOR" in shown.output
