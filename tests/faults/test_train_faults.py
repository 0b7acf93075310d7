"""Training survives lost workers and lost nodes: a SIGKILLed worker, a node removed mid-run.

Each test brings its own Ray (a local one, or a two-node ``ray.cluster_utils.Cluster``),
bounded to 2 CPUs and a small object store, and shuts it down afterwards.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from factory.settings import Settings
from factory.store import Store
from factory.train import TrainingConfig, train
from factory.train._synthetic import classification_table, mlp_config

OBJECT_STORE = 150 * 2**20


def _config(dataset: str, **settings) -> TrainingConfig:
    defaults = {"name": "faulty", "epochs": 5, "seed": 5, "max_failures": 3,
                "architecture_config": {"in_features": 8, "out_features": 2, "hidden": [64, 64], "dropout": 0.1},
                "hyperparameters": {"lr": 0.003, "batch_size": 16}}
    return mlp_config(dataset, features=8, **{**defaults, **settings})


@pytest.fixture
def store(tmp_path):
    home = tmp_path / "home"
    return Store(home, settings=Settings(home=str(home)))


@pytest.fixture
def code(tmp_path):
    """The runs' code: one script outside any repository, so its digest is stable."""
    script = tmp_path / "train.py"
    script.write_text("# the training script\n")
    return {"code_root": str(tmp_path), "entry": (str(script),)}


@pytest.fixture
def dataset(store):
    return store.datasets.add(classification_table(6000, features=8, seed=2), name="faulty", key=["id"]).digest


@pytest.fixture(autouse=True)
def train_env(monkeypatch):
    """Short report polls; patience for worker start-up on a loaded 2-core machine."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


@pytest.fixture
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=OBJECT_STORE, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def _after_first_checkpoint(storage: Path, action, timeout: float = 600.0) -> threading.Thread:
    """Run ``action`` as soon as the run's first checkpoint is in storage (on a thread)."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(storage.glob("*/checkpoint-*/MANIFEST-rank1.json")):
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _train_workers() -> list[psutil.Process]:
    """This cluster's Ray Train worker processes (children of our raylet, not anyone else's)."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [p for p in psutil.Process(raylet).children(recursive=True)
            if p.cmdline() and p.cmdline()[0].startswith("ray::RayTrainWorker")]


def test_a_killed_worker_resumes_to_the_same_weights(local_ray, store, dataset, code, tmp_path):
    """A worker SIGKILLed mid-run: the run completes with exactly the uninterrupted run's weights."""
    config = _config(dataset)
    clean = train(config, store=store, **code, storage_path=str(tmp_path / "clean"))
    assert clean.restarts == 0

    killed: list[int] = []

    def kill_one() -> None:
        victim = _train_workers()[-1]
        killed.append(victim.pid)
        victim.send_signal(signal.SIGKILL)

    watcher = _after_first_checkpoint(tmp_path / "killed", kill_one)
    again = train(config, store=store, **code, force=True, storage_path=str(tmp_path / "killed"))
    watcher.join(timeout=5)
    assert killed, "the worker was never killed"
    assert again.restarts >= 1
    assert again.weights == clean.weights
    assert [h["epoch"] for h in again.history] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_removed_node_does_not_stop_the_run(store, dataset, code, tmp_path):
    """Two nodes, one worker on each; the worker node is removed mid-run and the run still completes."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False})
    node = cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        config = _config(dataset, compute={"workers": 2, "cpus_per_worker": 0.5, "placement": "spread"})
        watcher = _after_first_checkpoint(tmp_path / "ray", lambda: cluster.remove_node(node, allow_graceful=False))
        result = train(config, store=store, **code, storage_path=str(tmp_path / "ray"))
        watcher.join(timeout=5)
        assert node not in cluster.worker_nodes, "the node was never removed"
        assert result.restarts >= 1
        assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert result.metrics["val_accuracy"] > 0.6
    finally:
        ray.shutdown()
        cluster.shutdown()
