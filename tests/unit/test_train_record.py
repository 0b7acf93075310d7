"""What a training run writes to ``store.runs``: its key, one metric point per epoch, checkpoint trees, its package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from factory.train._record import Inputs, RunRecord, candidate_ref, record_code_environment, record_inputs
from factory.train._synthetic import classification_table, mlp_config
from factory.train._trials import TrialRecorder
from factory.train.provenance import CodeState, EnvironmentState

CODE = CodeState(root="/src", commit="a" * 40, dirty=False)
ENV = EnvironmentState(python="CPython 3.11", distributions={"torch": "2.13"})


@pytest.fixture
def config(store):
    version = store.datasets.add(classification_table(64, features=4, seed=1), name="toy", key=["id"])
    return mlp_config(version.digest, features=4, name="toy-mlp", epochs=3)


def _checkpoint(folder, step: int):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(f"weights at {step}".encode())
    (folder / "state.json").write_text(f'{{"step": {step}}}')
    return str(folder)


def test_the_same_inputs_find_the_finished_run_and_force_starts_another(store, config):
    """Config, code and environment are the key: a finished run is reused, --force trains afresh."""
    inputs = record_inputs(store, config, CODE, ENV)
    first = RunRecord.start(store, inputs, config)
    assert not first.reused and set(first.run.parents) == set(inputs.parents())
    first.finish(inputs.config, {"val_loss": 0.5})   # any artifact stands in for the package here
    again = RunRecord.start(store, inputs, config)
    assert again.reused and again.id == first.id and again.reused_model() == inputs.config
    forced = RunRecord.start(store, inputs, config, force=True)
    assert not forced.reused and forced.id != first.id and forced.run.key is None
    other_code = Inputs(inputs.config, inputs.dataset, record_code_environment(
        store, CodeState(root="/src", commit="b" * 40, dirty=False), ENV)[0], inputs.environment)
    assert other_code.key != inputs.key


def test_each_epoch_is_recorded_once_even_when_trained_again(store, config):
    """Epochs reported again after a resume (same or an earlier step) do not enter the series twice."""
    record = RunRecord.start(store, record_inputs(store, config, CODE, ENV), config)
    assert record.log_epoch(10, {"epoch": 1.0, "step": 10.0, "train_loss": 0.9})
    assert record.log_epoch(20, {"epoch": 2.0, "step": 20.0, "train_loss": 0.7})
    assert not record.log_epoch(20, {"epoch": 2.0, "step": 20.0, "train_loss": 0.7})
    assert record.log_epoch(30, {"epoch": 3.0, "step": 30.0, "train_loss": 0.6})
    points = record.run.metrics()
    assert [(m.step, m.value) for m in points if m.name == "epoch"] == [(10, 1.0), (20, 2.0), (30, 3.0)]
    assert not any(m.name == "step" for m in points)


def test_epochs_whose_reports_were_lost_are_recorded_from_the_checkpoint(store, config, tmp_path):
    """A worker lost before Ray took an epoch's report: that epoch still appears in the run's series, in order."""
    from factory.train._checkpoint import STATE_FILE, TrainState

    record = RunRecord.start(store, record_inputs(store, config, CODE, ENV), config)
    folder = tmp_path / "c20"
    folder.mkdir()
    history = [{"epoch": 1.0, "train_loss": 0.9}, {"epoch": 2.0, "train_loss": 0.7}]
    (folder / STATE_FILE).write_bytes(TrainState(epoch=2, step=20, history=history).to_json())
    record.log_history(record.checkpoint(20, str(folder)), steps_per_epoch=10)
    assert not record.log_epoch(20, {"epoch": 2.0, "step": 20.0, "train_loss": 0.7})
    assert record.log_epoch(30, {"epoch": 3.0, "step": 30.0, "train_loss": 0.6})
    points = [(m.step, m.value) for m in record.run.metrics() if m.name == "epoch"]
    assert points == [(10, 1.0), (20, 2.0), (30, 3.0)]


def test_checkpoints_are_trees_recorded_on_the_run(store, config, tmp_path):
    """A checkpoint folder becomes a tree whose parent is the run, recorded once as checkpoint-<step>."""
    record = RunRecord.start(store, record_inputs(store, config, CODE, ENV), config)
    tree = record.checkpoint(10, _checkpoint(tmp_path / "c10", 10))
    assert record.checkpoint(10, _checkpoint(tmp_path / "again", 10)) == tree
    assert record.run.outputs() == {"checkpoint-000000010": tree}
    assert store.artifacts.get(tree).kind == "tree" and record.digest in store.lineage.parents(tree)
    assert sorted(store.trees.manifest(tree).files) == ["model.safetensors", "state.json"]


def test_a_restarted_driver_takes_over_the_interrupted_run_with_its_record(store, config, tmp_path):
    """The run of a killed driver is resumed: same id, its checkpoints to resume from, its epochs kept."""
    inputs = record_inputs(store, config, CODE, ENV)
    script = (
        "import sys; from factory.settings import Settings; from factory.store import Store\n"
        "from factory.train._record import RunRecord, Inputs\n"
        "from factory.train.config import TrainingConfig\n"
        "store = Store(sys.argv[1], settings=Settings(home=sys.argv[1], catalog=sys.argv[9]))\n"
        "config = TrainingConfig.model_validate_json(sys.argv[2])\n"
        "record = RunRecord.start(store, Inputs(*sys.argv[3:7]), config)\n"
        "record.log_epoch(10, {'epoch': 1.0, 'train_loss': 0.9})\n"
        "record.checkpoint(10, sys.argv[7]); record.checkpoint(20, sys.argv[8])\n"
        "record.log_epoch(20, {'epoch': 2.0, 'train_loss': 0.8})\n"
        "print(record.id)\n"
    )
    folders = [_checkpoint(tmp_path / "c10", 10), _checkpoint(tmp_path / "c20", 20)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", script, store.home, config.model_dump_json(), inputs.config,
                          inputs.dataset, inputs.code, inputs.environment, *folders, store.settings.catalog],
                         capture_output=True, text=True, env=env, check=True)
    dead_run = out.stdout.strip()
    assert store.runs.get(dead_run).state == "interrupted"

    record = RunRecord.start(store, inputs, config)
    assert record.resumed and record.id == dead_run
    assert [step for step, _ in record.resume_points()] == [20, 10]
    assert record.logged_epoch == 2.0 and not record.log_epoch(20, {"epoch": 2.0, "train_loss": 0.8})


def test_the_candidate_ref_points_at_the_model(store, config):
    """The candidate ref is model/<name>/candidates/<digest12>; registering twice is a no-op."""
    from factory.errors import InvalidInputError

    record = RunRecord.start(store, record_inputs(store, config, CODE, ENV), config)
    with pytest.raises(InvalidInputError):
        record.register_candidate(record.inputs.config)   # a config is not a model: the namespace refuses it
    assert candidate_ref("toy", "sha256:" + "ab" * 32) == "model/toy/candidates/" + "ab" * 6


def test_a_sweep_records_each_trial_as_a_child_run(store, config, tmp_path):
    """Each trial is a train run under the sweep's run: its hyperparameters, epochs, checkpoints and end."""
    inputs = record_inputs(store, config, CODE, ENV)
    sweep = store.runs.start("tune", config={"space": {}}, parents=inputs.parents(), name=config.name)
    recorder = TrialRecorder(store, config, inputs, sweep)
    fast = {"hyperparameters.lr": 0.1}
    recorder.start("t1", fast)
    recorder.result("t1", fast, {"epoch": 1, "step": 5, "train_loss": 0.7, "training_iteration": 1,
                                 "checkpoint_path": _checkpoint(tmp_path / "t1-5", 5)})
    recorder.result("t2", {"hyperparameters.lr": 0.01}, {"epoch": 1, "step": 5, "train_loss": 0.9})
    recorder.complete("t1", fast)
    recorder.error("t2", {"hyperparameters.lr": 0.01}, "Boom")
    t1, t2 = store.runs.get(recorder.records["t1"].id), store.runs.get(recorder.records["t2"].id)
    assert sweep.digest in t1.parents and inputs.dataset in t1.parents
    trial_config = store.artifacts.get(next(p for p in t1.parents if store.artifacts.get(p).kind == "training-config"))
    assert trial_config.metadata["hyperparameters"]["lr"] == 0.1 and trial_config.parents == (inputs.dataset,)
    assert [m.name for m in t1.metrics()] == ["epoch", "train_loss"]
    assert list(t1.outputs()) == ["checkpoint-000000005"]
    assert t1.state == "succeeded" and t1.events()[-1].details["stopped_early"] is True
    assert t2.state == "failed" and "Boom" in t2.events()[-1].details["error"]
    assert any(e.details.get("params") == fast for e in t1.events())
