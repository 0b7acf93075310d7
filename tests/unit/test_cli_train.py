"""``factory train`` and ``factory tune`` refuse a config that cannot run: exit 2, one line, no cluster started."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import yaml

EXE = os.path.join(os.path.dirname(sys.executable), "factory")
MISSING = "sha256:" + "0" * 64


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def dataset(store):
    n = 64
    table = pa.table({"id": np.arange(n), "a": np.linspace(0, 1, n), "b": np.linspace(1, 0, n), "y": np.arange(n) % 2})
    return store.datasets.add(table, name="toy", key=["id"])


def _config(version, overrides=None) -> dict:
    data = {
        "name": "toy",
        "dataset": version.digest,
        "label": "y",
        "features": ["a", "b"],
        "architecture": "mlp-classifier@1",
        "architecture_config": {"in_features": 2, "out_features": 2},
        "hyperparameters": {"batch_size": 8},
    }
    data.update(overrides or {})
    return data


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": MISSING}, f"dataset {MISSING} is not a dataset version in the store"),
        ({"architecture": "transformer@2"}, "no architecture named 'transformer'"),
        ({"architecture": "mlp-classifier@9"}, "installed at version 1, not 9"),
        ({"label": "target"}, "has no label column 'target': choose among id, a, b, y"),
        ({"features": ["a", "c"]}, "has no column(s) 'c'"),
        ({"architecture_config": {"in_features": 3, "out_features": 2}}, "set architecture_config.in_features to 2"),
        ({"hyperparameters": {"batch_size": 128}}, "fewer than one batch of 128"),
        ({"dataset": "toy"}, "not a dataset version digest"),
    ],
)
def test_train_refuses_bad_configs_before_any_worker_starts(store, dataset, tmp_path, overrides, message):
    """Bad input to `factory train`: exit 2 and one line naming the problem, before Ray is touched."""
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_config(dataset, overrides)))
    res = run("train", str(path), "--home", store.home)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_tune_refuses_a_space_outside_the_config(store, dataset, tmp_path):
    """A sweep over a setting that is not a hyperparameter or architecture setting is refused."""
    path = tmp_path / "sweep.yaml"
    sweep = {"train": _config(dataset), "space": {"seed": {"choice": [1, 2]}}}
    path.write_text(yaml.safe_dump(sweep))
    res = run("tune", str(path), "--home", store.home)
    assert res.returncode == 2
    assert "space.seed: a sweep varies hyperparameters.* and architecture_config.* only" in res.stderr


def test_train_and_tune_are_listed():
    """`factory --help` offers train and tune."""
    res = run("--help")
    assert res.returncode == 0 and "train" in res.stdout and "tune" in res.stdout
