"""Training survives lost workers, lost nodes and a lost driver.

A SIGKILLed worker, a node removed mid-run, and the driver itself SIGKILLed and started
again. The killed worker and the killed driver are on the session's shared cluster (2 CPUs;
the driver is a ``factory train`` process of its own connected to it); the removed node
needs a ``ray.cluster_utils.Cluster`` of two nodes, for which the shared cluster is shut
down (the next module that uses it starts it again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

import psutil
import pytest
import ray

from factory.settings import Settings
from factory.store import Store
from factory.train import TrainingConfig, train
from factory.train import _checkpoint as ckpt
from factory.train._synthetic import classification_table, mlp_config

OBJECT_STORE = 150 * 2**20


def _config(dataset: str, **settings) -> TrainingConfig:
    defaults = {"name": "faulty", "epochs": 5, "seed": 5, "max_failures": 3,
                "architecture_config": {"in_features": 8, "out_features": 2, "hidden": [64, 64], "dropout": 0.1},
                "hyperparameters": {"lr": 0.003, "batch_size": 16}}
    return mlp_config(dataset, features=8, **{**defaults, **settings})


def _store(folder: Path) -> Store:
    return Store(folder / "home", settings=Settings(home=str(folder / "home")))


def _code(folder: Path) -> dict:
    """The runs' code: one script outside any repository, so its digest is stable."""
    script = folder / "train.py"
    script.write_text("# the training script\n")
    return {"code_root": str(folder), "entry": (str(script),)}


def _dataset(store: Store) -> str:
    return store.datasets.add(classification_table(6000, features=8, seed=2), name="faulty", key=["id"]).digest


@pytest.fixture
def store(tmp_path):
    return _store(tmp_path)


@pytest.fixture
def code(tmp_path):
    return _code(tmp_path)


@pytest.fixture
def dataset(store):
    return _dataset(store)


def _train_env(monkeypatch) -> None:
    """Short report polls; patience for worker start-up on a loaded 2-core machine."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


@pytest.fixture(autouse=True)
def train_env(monkeypatch):
    _train_env(monkeypatch)


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory) -> str:
    """The weights digest of the fault tests' config trained with no fault, in a store of its own: what the
    killed worker's and the killed driver's runs must end with (the same config and data give the same weights)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    store = _store(folder)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _train_env(monkeypatch)
        clean = train(_config(_dataset(store)), store=store, **_code(folder), storage_path=str(folder / "ray"))
    assert clean.restarts == 0
    return clean.weights


def _after_first_checkpoint(storage: Path, action, timeout: float = 900.0) -> threading.Thread:
    """Run ``action`` as soon as a whole checkpoint (every rank's share, verified) is in storage (on a thread)."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(ckpt.verify(folder) is None for folder in storage.glob("*/checkpoint-*")):
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _train_workers() -> list[psutil.Process]:
    """This cluster's live Ray Train worker processes (children of our raylet, not anyone else's).

    An earlier run's workers can linger as zombies until the raylet reaps them; they are not counted.
    """
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    workers = []
    for p in psutil.Process(raylet).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.cmdline()[:1] and p.cmdline()[0].startswith("ray::RayTrainWorker"):
                workers.append(p)
        except psutil.Error:
            continue
    return workers


def _resumed_from(store: Store, run_id: str) -> list[int]:
    return [e.details["resumed_from_step"] for e in store.runs.get(run_id).events() if "resumed_from_step" in e.details]


def test_a_killed_worker_resumes_to_the_same_weights(uninterrupted, store, dataset, code, tmp_path):
    """A worker SIGKILLed mid-run: the run completes with exactly the uninterrupted run's weights."""
    config = _config(dataset)
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
    assert again.weights == uninterrupted
    assert [h["epoch"] for h in again.history] == [1.0, 2.0, 3.0, 4.0, 5.0]
    # The new workers resumed from a checkpoint (not from the start), and the record holds each epoch once.
    assert _resumed_from(store, again.run) and min(_resumed_from(store, again.run)) > 0
    record = store.runs.get(again.run)
    assert [m.value for m in record.metrics() if m.name == "epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0]


EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def _first_recorded_checkpoint(store: Store, driver: subprocess.Popen, timeout: float = 900.0) -> tuple[str, int]:
    """Wait until the driver's keyed run records a checkpoint in the store: (run id, its step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        for run in store.runs.list(kind="train"):
            steps = [int(n.rsplit("-", 1)[1]) for n in run.outputs() if n.startswith("checkpoint-")]
            if run.key is not None and steps:
                return run.id, min(steps)
        time.sleep(0.05)
    raise AssertionError(f"the driver recorded no checkpoint (exit code {driver.poll()})")


def test_a_killed_driver_resumes_its_run_with_no_epoch_trained_twice(uninterrupted, store, dataset, tmp_path):
    """The driver SIGKILLed after its first recorded checkpoint and started again resumes the same run from
    its checkpoints: each epoch is in the record once, and the weights equal an uninterrupted run's."""
    # The drivers are processes of their own on the shared cluster: Ray ends a killed driver's workers.
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(_config(dataset).model_dump(mode="json")))
    address = ray.get_runtime_context().gcs_address
    argv = [EXE, "train", str(path), "--home", store.home, "--address", address, "--json"]
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}
    # The code of record is the config file alone (tmp_path is in no repository), the same each time.
    run = dict(capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500)

    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    try:
        run_id, first_step = _first_recorded_checkpoint(store, driver)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    assert store.runs.get(run_id).state == "interrupted"

    again = subprocess.run(argv, **run)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["run"] == run_id and result["resumed"] and not result["reused"]
    assert result["weights"] == uninterrupted

    record = store.runs.get(run_id)
    assert record.state == "succeeded"
    assert [m.value for m in record.metrics() if m.name == "epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    resumed_from = [e.details["resumed_from_step"] for e in record.events() if "resumed_from_step" in e.details]
    assert resumed_from and resumed_from[0] >= first_step
    assert any(e.details.get("resumed") for e in record.events())


# Last in the module: it shuts the shared cluster down for a cluster of its own (the next module's
# ``ray_cluster`` starts the shared one again).
def test_a_removed_node_does_not_stop_the_run(store, dataset, code, tmp_path):
    """Two nodes, one worker on each; the worker node is removed mid-run and the run still completes."""
    from _shared_ray import two_node_cluster

    ray.shutdown()
    cluster, node = two_node_cluster(dict(num_cpus=1, object_store_memory=OBJECT_STORE, include_dashboard=False),
                                     dict(num_cpus=1, object_store_memory=OBJECT_STORE))
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
