"""Training on the shared Ray cluster: reproducible weights, packages that validate, resumes that are exact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from factory.contract import validate
from factory.train import TrainingConfig, train
from factory.train import _checkpoint as ckpt
from factory.train._synthetic import classification_table, mlp_config
from factory.train.job import loop_spec, trainer_for
from factory.train.submission import check_submission



def make_config(dataset: str, **settings) -> TrainingConfig:
    defaults = {"architecture_config": {"in_features": 4, "out_features": 2, "hidden": [16], "dropout": 0.1},
                "epochs": 3, "seed": 11, "max_failures": 2}
    return mlp_config(dataset, features=4, **{**defaults, **settings})


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    """One finished 3-epoch run on a small generated dataset."""
    from factory.settings import Settings

    # Worker processes can take minutes to start on a loaded 2-core machine; Ray's default is 60 s.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    from factory.store import Store

    root = tmp_path_factory.mktemp("train")
    home = root / "home"
    store = Store(home, settings=Settings(home=str(home)))
    # The code of these runs: one script outside any repository, so edits elsewhere never change its digest.
    script = root / "train.py"
    script.write_text("# the training script\n")
    code = {"code_root": str(root), "entry": (str(script),)}
    version = store.datasets.add(classification_table(480, features=4, seed=3), name="toy", key=["id"])
    config = make_config(version.digest)
    reports = []
    result = train(config, store=store, progress=reports.append, **code)
    return store, config, result, reports, code


def _ray_run_dir(store, config, result) -> Path:
    """Where Ray Train kept the run's checkpoints: ``<home>/train/<name>-<run id>``."""
    return Path(store.uri("train")) / f"{config.name}-{result.run}"


def test_a_run_packages_a_valid_model_with_its_lineage(trained):
    """The package validates against its contract and traces back to the run, checkpoint, config, data, code, environment."""
    store, config, result, reports, _ = trained
    assert [r.epoch for r in reports if r.end_of_epoch] == [1.0, 2.0, 3.0]
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert result.metrics["val_accuracy"] > 0.6 and not result.reused
    assert validate(result.model, store=store).ok
    assert store.refs.get(result.candidate) == result.model
    assert result.candidate == f"model/toy/candidates/{result.model[7:19]}"
    model = store.artifacts.get(result.model)
    run = store.runs.get(result.run)
    assert {result.config, result.dataset, result.code, result.environment, run.digest,
            result.checkpoint} <= set(model.parents)
    assert store.artifacts.get(result.config).parents == (result.dataset,)
    assert result.config == config.digest
    assert model.metadata["provenance"]["code"] == result.code


def test_the_run_record_holds_each_epoch_its_checkpoints_and_its_package(trained):
    """store.runs shows the run succeeded, one metric point per epoch, every checkpoint as a tree, the package."""
    store, config, result, _, _ = trained
    run = store.runs.get(result.run)
    assert run.state == "succeeded" and run.kind == "train"
    epochs = [(m.step, m.value) for m in run.metrics() if m.name == "epoch"]
    assert [e for _, e in epochs] == [1.0, 2.0, 3.0]
    outputs = run.outputs()
    assert outputs["model"] == result.model
    trees = {name: digest for name, digest in outputs.items() if name.startswith("checkpoint-")}
    assert sorted(trees) == [f"checkpoint-{step:09d}" for step, _ in epochs]
    assert trees[max(trees)] == result.checkpoint
    files = store.trees.manifest(result.checkpoint).files
    assert {"model.safetensors", "state.json", "MANIFEST-rank0.json", "MANIFEST-rank1.json"} <= set(files)


def test_the_same_config_twice_gives_the_same_weights_and_reuses_the_run(trained):
    """Trained again (--force) the weights are bit-for-bit the same; without --force the run is reused."""
    store, config, first, _, code = trained
    again = train(config, store=store, **code, force=True)
    assert again.weights == first.weights and again.history == first.history and not again.reused
    reused = train(config, store=store, **code)
    assert reused.reused and reused.model == first.model and reused.metrics == first.metrics


def test_a_damaged_latest_checkpoint_is_skipped_for_the_one_before(trained):
    """The newest checkpoint fails verification: the rerun resumes from the previous one, same weights."""
    store, config, first, _, code = trained
    run_dir = _ray_run_dir(store, config, first)
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    assert len(checkpoints) == 3
    latest = checkpoints[-1] / ckpt.MODEL_FILE
    damaged = bytearray(latest.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    latest.write_bytes(bytes(damaged))

    spec = loop_spec(check_submission(config, store))
    # The same RunConfig(name, storage_path): Ray Train restores the run and its latest checkpoint.
    result = trainer_for(spec, name=run_dir.name, storage_path=str(run_dir.parent)).fit()
    assert result.metrics["resumed_from_step"] == ckpt.step_of(checkpoints[-2].name)
    assert result.metrics["skipped_checkpoints"] == 1
    with result.checkpoint.as_directory() as folder:
        assert ckpt.verify(folder, 2) is None
        from safetensors.torch import load_file

        weights = load_file(os.path.join(folder, ckpt.MODEL_FILE))
    from factory.contract import load

    packaged = load(store, first.model).module.state_dict()
    assert all(weights[k].equal(v) for k, v in packaged.items())


def test_deepspeed_zero2_trains_checkpoints_and_resumes(trained):
    """ZeRO-2 on 2 CPU workers trains, writes DeepSpeed's sharded checkpoint, and resumes from it."""
    store, _, _, _, code = trained
    dataset = store.datasets.get("toy").digest
    config = make_config(dataset, name="toy-ds", epochs=2, strategy={"kind": "deepspeed", "zero_stage": 2},
                         architecture_config={"in_features": 4, "out_features": 2, "hidden": [16]})
    result = train(config, store=store, **code)
    assert validate(result.model, store=store).ok
    # DeepSpeed's sharded checkpoint is in the store as a tree: one optimiser shard per worker.
    files = store.trees.manifest(result.checkpoint).files
    shards = sorted(p.rsplit("/", 1)[1] for p in files if p.startswith("deepspeed/state/zero_pp_rank_"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    final = sorted(_ray_run_dir(store, config, result).glob("checkpoint-*"))[-1]

    longer = config.model_copy(update={"epochs": 3})
    resumed = trainer_for(loop_spec(check_submission(longer, store)), name=final.parent.name,
                          storage_path=str(final.parent.parent)).fit()
    assert resumed.metrics["epoch"] == 3.0
    assert resumed.metrics["resumed_from_step"] == ckpt.step_of(final.name)
    with resumed.checkpoint.as_directory() as folder:
        state = ckpt.TrainState.from_json(Path(folder, ckpt.STATE_FILE).read_bytes())
    assert [h["epoch"] for h in state.history] == [1.0, 2.0, 3.0]
    assert state.history[:2] == list(result.history)
