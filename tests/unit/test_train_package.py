"""A finished run's checkpoint becomes a package, sharded when its weights are large, without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save_file

from factory.contract import Contract, ModelPackageMeta, default_registry, load, package
from factory.contract import packages as packages_module
from factory.train import _checkpoint as ckpt
from factory.train import capture_code, capture_environment
from factory.train._record import RunRecord, record_inputs
from factory.train.config import parse_config
from factory.train.job import _reused, package_checkpoint
from factory.train.submission import check_submission

ARCH_CONFIG = {"in_features": 2, "out_features": 2, "hidden": [16]}


def _submission(store, tmp_path):
    n = 32
    table = pa.table({"id": np.arange(n), "a": np.linspace(0, 1, n), "b": np.linspace(1, 0, n), "y": np.arange(n) % 2})
    version = store.datasets.add(table, name="toy", key=["id"])
    config = parse_config({
        "name": "toy", "dataset": version.digest, "label": "y", "features": ["a", "b"], "epochs": 2,
        "architecture": "mlp-classifier@1", "architecture_config": ARCH_CONFIG,
        "hyperparameters": {"batch_size": 8},
    }, source="the test")
    script = tmp_path / "code" / "train.py"
    script.parent.mkdir()
    script.write_text("print('train')\n")
    inputs = record_inputs(store, config, capture_code(script.parent, entry=(script,)), capture_environment())
    return check_submission(config, store), inputs, config


def _final_checkpoint(folder, model, config):
    """The last epoch's checkpoint as rank 0 of a one-worker run writes it."""
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / ckpt.MODEL_FILE))
    state = ckpt.TrainState(epoch=config.epochs, step=8, world_size=config.compute.workers,
                            history=[{"epoch": config.epochs, "train_loss": 0.5}])
    (folder / ckpt.STATE_FILE).write_bytes(state.to_json())
    files = [ckpt.MODEL_FILE, ckpt.STATE_FILE]
    for rank in range(config.compute.workers):
        rank_files = [ckpt.save_rank_state(folder, rank, torch.device("cpu"), loss_sum=0.0)]
        ckpt.write_manifest(folder, rank, config.compute.workers, rank_files + (files if rank == 0 else []))
    return folder


def test_a_checkpoint_with_large_weights_is_packaged_as_shards_and_reused(store, tmp_path, monkeypatch):
    """Weights over the shard size become a sharded package; the run's weights digest names them, also on reuse."""
    monkeypatch.setitem(packages_module.package.__kwdefaults__, "max_shard_bytes", 64)
    sub, inputs, config = _submission(store, tmp_path)
    model = default_registry().build("mlp-classifier", ARCH_CONFIG, seed=3)
    folder = _final_checkpoint(tmp_path / ckpt.checkpoint_name(8), model, config)
    record = RunRecord.start(store, inputs, config)
    result = package_checkpoint(sub, record, folder, started=0.0, code_dirty=False)

    meta = store.artifacts.get(result.model).meta(ModelPackageMeta)
    assert "model.safetensors" not in meta.files and len([n for n in meta.files if n.startswith("model-")]) >= 2
    assert result.weights == meta.weights_digest and result.weights not in meta.files.values()
    loaded = load(store, result.model).module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

    again = RunRecord.start(store, inputs, config)
    assert again.reused_model == result.model
    assert _reused(again, config, 0.0, False).weights == result.weights


def test_the_weights_digest_of_a_single_file_is_that_file(store):
    """Small weights stay one model.safetensors, and the run's weights digest is that file's digest."""
    model = default_registry().build("mlp-classifier", ARCH_CONFIG, seed=3)
    sig = default_registry().get("mlp-classifier").expected(ARCH_CONFIG)
    pkg = package(store, model, Contract(name="toy", inputs=sig.inputs, outputs=sig.outputs))
    meta = pkg.artifact.meta(ModelPackageMeta)
    assert meta.weights_digest == meta.files["model.safetensors"]

