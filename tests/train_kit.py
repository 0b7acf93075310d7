"""Shared makings of the training fault tests (a lost worker or driver, a lost node)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from factory.settings import Settings
from factory.store import Store
from factory.train import TrainingConfig
from factory.train import _checkpoint as ckpt
from factory.train._synthetic import classification_table, mlp_config

OBJECT_STORE = 150 * 2**20


def config(dataset: str, **settings) -> TrainingConfig:
    defaults = {"name": "faulty", "epochs": 5, "seed": 5, "max_failures": 3,
                "architecture_config": {"in_features": 8, "out_features": 2, "hidden": [64, 64], "dropout": 0.1},
                "hyperparameters": {"lr": 0.003, "batch_size": 16}}
    return mlp_config(dataset, features=8, **{**defaults, **settings})


def store_in(folder: Path) -> Store:
    return Store(folder / "home", settings=Settings(home=str(folder / "home")))


def code_in(folder: Path) -> dict:
    """The runs' code: one script outside any repository, so its digest is stable."""
    script = folder / "train.py"
    script.write_text("# the training script\n")
    return {"code_root": str(folder), "entry": (str(script),)}


def dataset_of(store: Store) -> str:
    return store.datasets.add(classification_table(3000, features=8, seed=2), name="faulty", key=["id"]).digest


def train_env(monkeypatch) -> None:
    """Short report polls; patience for worker start-up on a loaded 2-core machine."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


def after_first_checkpoint(storage: Path, action, timeout: float = 900.0) -> threading.Thread:
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
