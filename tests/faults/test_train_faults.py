"""Training survives lost workers and a lost driver.

A SIGKILLed worker, and the driver itself SIGKILLed and started again, both on the session's
shared cluster (2 CPUs; the driver is a ``factory train`` process of its own connected to it).
A node removed mid-run is in test_train_node_loss.py: it needs a cluster of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml

import psutil
import pytest
import ray

from train_kit import after_first_checkpoint, code_in, config, dataset_of, store_in, train_env

from factory.store import Store
from factory.train import train


@pytest.fixture
def store(tmp_path):
    return store_in(tmp_path)


@pytest.fixture
def code(tmp_path):
    return code_in(tmp_path)


@pytest.fixture
def dataset(store):
    return dataset_of(store)


@pytest.fixture(autouse=True)
def fault_env(monkeypatch):
    train_env(monkeypatch)


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory) -> str:
    """The weights digest of the fault tests' config trained with no fault, in a store of its own: what the
    killed worker's and the killed driver's runs must end with (the same config and data give the same weights)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    store = store_in(folder)
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_env(monkeypatch)
        clean = train(config(dataset_of(store)), store=store, **code_in(folder), storage_path=str(folder / "ray"))
    assert clean.restarts == 0
    return clean.weights


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
    killed: list[int] = []

    def kill_one() -> None:
        victim = _train_workers()[-1]
        killed.append(victim.pid)
        victim.send_signal(signal.SIGKILL)

    watcher = after_first_checkpoint(tmp_path / "killed", kill_one)
    again = train(config(dataset), store=store, **code, force=True, storage_path=str(tmp_path / "killed"))
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
    path.write_text(yaml.safe_dump(config(dataset).model_dump(mode="json")))
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
