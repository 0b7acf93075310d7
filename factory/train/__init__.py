"""Training on Ray Train and Ray Tune: a dataset version and a config in, a model package out.

``train(config, store=...)`` runs a ``TrainingConfig`` as a Ray Train job (DDP, or
DeepSpeed with a ZeRO stage), checkpointed and resumed after lost workers, and packages
the result behind its contract. ``tune(sweep, store=...)`` runs a Ray Tune sweep with
ASHA and packages the best trial. ``track(name)`` records a script that was not written
for factory. Imports here are lazy: ``import factory.train`` loads neither Ray nor torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "TrainingConfig",
    "Hyperparameters",
    "Compute",
    "Strategy",
    "CheckpointPolicy",
    "TIERS",
    "load_config",
    "CodeState",
    "EnvironmentState",
    "capture_code",
    "capture_environment",
    "Submission",
    "check_submission",
    "EpochReport",
    "TrainResult",
    "train",
    "SweepConfig",
    "SweepResult",
    "load_sweep",
    "tune",
    "Tracker",
    "track",
]

_WHERE = {
    "TrainingConfig": "config",
    "Hyperparameters": "config",
    "Compute": "config",
    "Strategy": "config",
    "CheckpointPolicy": "config",
    "TIERS": "config",
    "load_config": "config",
    "CodeState": "provenance",
    "EnvironmentState": "provenance",
    "capture_code": "provenance",
    "capture_environment": "provenance",
    "Submission": "submission",
    "check_submission": "submission",
    "EpochReport": "job",
    "TrainResult": "job",
    "train": "job",
    "SweepConfig": "sweep",
    "SweepResult": "sweep",
    "load_sweep": "sweep",
    "tune": "sweep",
    "Tracker": "track",
    "track": "track",
}

if TYPE_CHECKING:
    from factory.train.config import TIERS, CheckpointPolicy, Compute, Hyperparameters, Strategy, TrainingConfig, load_config
    from factory.train.job import EpochReport, TrainResult, train
    from factory.train.provenance import CodeState, EnvironmentState, capture_code, capture_environment
    from factory.train.submission import Submission, check_submission
    from factory.train.sweep import SweepConfig, SweepResult, load_sweep, tune
    from factory.train.track import Tracker, track


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'factory.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"factory.train.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
