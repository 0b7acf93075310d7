"""`factory train` end to end on a cluster started with `ray start --head` (the session's ``ray_head``):
epoch lines while it runs, the table, then reuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from factory.contract import validate
from factory.train._synthetic import classification_table, mlp_config

EXE = os.path.join(os.path.dirname(sys.executable), "factory")

pytestmark = pytest.mark.own_cluster  # the session's `ray start --head`, not the shared cluster


def test_factory_train_prints_epochs_and_the_package_then_reuses_it(ray_head, store, tmp_path):
    """A config trains through the CLI into a valid package traced to its dataset, config, code and environment;
    the same config again is reused, not retrained."""
    version = store.datasets.add(classification_table(300, features=4, seed=4), name="cli", key=["id"])
    config = mlp_config(version.digest, features=4, name="cli-mlp", epochs=2,
                        compute={"workers": 2, "cpus_per_worker": 0.25})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    argv = [EXE, "train", str(path), "--home", store.home, "--address", ray_head.address]
    env = {**ray_head.env, "COLUMNS": "250", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}

    first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "epoch 1/2" in first.stderr and "epoch 2/2" in first.stderr
    assert "candidate ref" in first.stdout and "model/cli-mlp/candidates/" in first.stdout

    again = subprocess.run([*argv, "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["reused"] is True and result["model"] in first.stdout
    assert validate(result["model"], store=store).ok
    model = store.artifacts.get(result["model"])
    assert result["dataset"] == version.digest
    assert {version.digest, result["config"], result["code"], result["environment"],
            store.runs.get(result["run"]).digest, result["checkpoint"]} - {None} <= set(model.parents)
    assert store.artifacts.get(result["config"]).parents == (version.digest,)
    assert store.artifacts.get(result["code"]).kind == "code"
    assert store.artifacts.get(result["environment"]).kind == "environment"
    provenance = model.metadata["provenance"]
    assert (provenance["dataset"], provenance["code"], provenance["environment"]) == (
        version.digest, result["code"], result["environment"])
