"""``TrainingConfig``: everything that decides what a training run computes, as users write it.

A config names its data by dataset version digest (never a path or a name), its model
by architecture ``name@version`` from the contract's registry, and its hardware by a
compute tier. Its digest (SHA-256 of its canonical JSON) is its identity: with the code
and environment digests it is the run's idempotency key. What can be checked without a
store or a cluster is checked here; ``submission`` checks the rest before any worker
starts.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from factory.errors import InvalidInputError
from factory.store import canonical_json

__all__ = [
    "TIERS",
    "Tier",
    "Hyperparameters",
    "Compute",
    "Strategy",
    "CheckpointPolicy",
    "TrainingConfig",
    "load_config",
    "read_yaml",
    "parse_config",
    "parse_settings",
    "explain_validation_error",
]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ARCHITECTURE = re.compile(r"^([a-z0-9][a-z0-9_.\-]*)@([A-Za-z0-9][A-Za-z0-9_.\-]*)$")
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=128)]


def _dataset_digest(value: str) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ValueError(
            f"{value!r} is not a dataset version digest: give the full 'sha256:<64 hex>' of the version "
            "(never a path or a name; 'factory dataset show NAME' prints it)"
        )
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(_Frozen):
    """What one worker of a compute tier asks Ray for, besides its CPUs."""

    gpus: int
    accelerator: str | None


# Ray's accelerator type names (ray.util.accelerators): a GPU tier only lands on nodes of its kind.
TIERS: dict[str, Tier] = {
    "cpu": Tier(gpus=0, accelerator=None),
    "gpu": Tier(gpus=1, accelerator=None),  # one GPU of whatever type the cluster has
    "gpu-l4": Tier(gpus=1, accelerator="L4"),
    "gpu-a100": Tier(gpus=1, accelerator="A100"),
    "gpu-h100": Tier(gpus=1, accelerator="H100"),
}


class Hyperparameters(_Frozen):
    """How the optimiser walks: learning rate, global batch size, optimiser and its knobs."""

    lr: float = Field(1e-3, gt=0.0, le=10.0, description="learning rate")
    batch_size: int = Field(64, ge=1, le=1 << 20, description="global batch: split evenly across workers")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD only")
    grad_clip: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this")
    validation_fraction: float = Field(0.2, ge=0.0, le=0.5, description="rows held out for validation metrics")

    @model_validator(mode="after")
    def _momentum_is_for_sgd(self) -> Hyperparameters:
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(
                f"momentum applies to optimizer 'sgd' only, not {self.optimizer!r}: remove it or use optimizer: sgd"
            )
        return self


class Compute(_Frozen):
    """Where the workers run: a tier, how many workers, CPUs each (fractions allowed), placement."""

    tier: Literal["cpu", "gpu", "gpu-l4", "gpu-a100", "gpu-h100"] = "cpu"
    workers: int = Field(1, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0.0, le=512.0)
    placement: Literal["pack", "spread"] = "pack"

    @property
    def gpus_per_worker(self) -> int:
        return TIERS[self.tier].gpus

    @property
    def accelerator(self) -> str | None:
        return TIERS[self.tier].accelerator

    def resources_per_worker(self) -> dict[str, float]:
        """The Ray resources one worker reserves."""
        out = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            out["GPU"] = float(self.gpus_per_worker)
        return out


class Strategy(_Frozen):
    """How workers share the work: plain DDP, or DeepSpeed with a ZeRO stage."""

    kind: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[1, 2, 3] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _stage_fits_kind(self) -> Strategy:
        if self.kind == "deepspeed" and self.zero_stage is None:
            raise ValueError("strategy deepspeed needs a zero_stage (1, 2 or 3)")
        if self.kind == "ddp" and self.zero_stage is not None:
            raise ValueError("zero_stage applies to strategy deepspeed only: remove it or set kind: deepspeed")
        return self


class CheckpointPolicy(_Frozen):
    """When to checkpoint (every N epochs, or every N optimiser steps) and how many to keep."""

    every_epochs: int | None = Field(1, ge=1)
    every_steps: int | None = Field(None, ge=1)
    keep: int = Field(3, ge=2, le=1000, description="at least 2, so a bad latest one has a predecessor")

    @model_validator(mode="before")
    @classmethod
    def _steps_replace_epochs(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and value.get("every_steps") is not None and "every_epochs" not in value:
            return {**value, "every_epochs": None}
        return value

    @model_validator(mode="after")
    def _one_frequency(self) -> CheckpointPolicy:
        if (self.every_epochs is None) == (self.every_steps is None):
            raise ValueError("give exactly one of checkpoint.every_epochs and checkpoint.every_steps")
        return self


class TrainingConfig(_Frozen):
    """One training job: data, model, optimiser, hardware, strategy, seed and fault tolerance."""

    name: ModelName = Field(description="the model's name: the package and its candidate ref carry it")
    dataset: Annotated[str, AfterValidator(_dataset_digest)]
    label: ColumnName
    features: tuple[ColumnName, ...] = Field(min_length=1, max_length=100_000)
    architecture: str = Field(description="name@version from the architecture registry, e.g. mlp-classifier@1")
    architecture_config: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: Hyperparameters = Hyperparameters()
    compute: Compute = Compute()
    strategy: Strategy = Strategy()
    seed: int = Field(0, ge=0, lt=2**32)
    epochs: int = Field(1, ge=1, le=100_000)
    max_failures: int = Field(3, ge=-1, le=10_000, description="worker failures to recover from; -1: no limit")
    checkpoint: CheckpointPolicy = CheckpointPolicy()

    @field_validator("architecture")
    @classmethod
    def _name_at_version(cls, value: str) -> str:
        if not _ARCHITECTURE.match(value):
            raise ValueError(
                f"{value!r} is not NAME@VERSION: name an architecture and its version, e.g. 'mlp-classifier@1' "
                "('factory contract architectures' lists them)"
            )
        return value

    @field_validator("architecture_config")
    @classmethod
    def _json_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"architecture_config must be plain JSON: {exc}") from None
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> TrainingConfig:
        seen: set[str] = set()
        for column in self.features:
            if column in seen:
                raise ValueError(f"feature column {column!r} is listed twice: list each column once")
            seen.add(column)
        if self.label in seen:
            raise ValueError(f"column {self.label!r} is both the label and a feature: remove it from features")
        batch, workers = self.hyperparameters.batch_size, self.compute.workers
        if batch % workers:
            raise ValueError(
                f"hyperparameters.batch_size {batch} does not split evenly across {workers} workers: "
                f"use a multiple of {workers} (e.g. {max(workers, batch - batch % workers)})"
            )
        if self.strategy.kind == "deepspeed" and self.hyperparameters.optimizer == "sgd" and self.strategy.zero_stage == 3:
            raise ValueError("ZeRO stage 3 needs optimizer adam or adamw here: sgd is not supported with stage 3")
        return self

    # -- identity -----------------------------------------------------------------

    @property
    def architecture_name(self) -> str:
        return self.architecture.partition("@")[0]

    @property
    def architecture_version(self) -> str:
        return self.architecture.partition("@")[2]

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes hashed for ``digest`` and stored as the config's blob."""
        return canonical_json(self.model_dump(mode="json"))

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_json()).hexdigest()

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainingConfig:
        """A copy with dotted paths replaced (``{"hyperparameters.lr": 0.1}``), validated again."""
        data = self.model_dump(mode="json")
        for path, value in overrides.items():
            *parents, leaf = path.split(".")
            node = data
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise InvalidInputError(f"{path!r} does not name a setting of the training config: check the path")
            node[leaf] = value  # unknown leaves are refused below (extra="forbid")
        return parse_config(data, source="the overridden config")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainingConfig:
        return load_config(path)


def explain_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming each bad setting by its dotted path and what to change."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known setting: check its spelling and indentation"
        elif error["type"] == "missing":
            message = "is required"
        problems.append(f"{where}: {message}")
    return f"{source} is not a valid configuration: " + "; ".join(problems)


M = TypeVar("M", bound=BaseModel)


def parse_settings(model: type[M], data: Any, *, source: str) -> M:
    """``model`` from plain data, or ``InvalidInputError`` naming every bad setting."""
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{source} must be a mapping of settings, not {type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidInputError(explain_validation_error(exc, source)) from None


def parse_config(data: Any, *, source: str) -> TrainingConfig:
    """A ``TrainingConfig`` from plain data, or ``InvalidInputError`` naming every bad setting."""
    return parse_settings(TrainingConfig, data, source=source)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The parsed YAML document at ``path``, or ``InvalidInputError`` saying why it cannot be read."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise InvalidInputError(f"no config file at {path}: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None


def load_config(path: str | os.PathLike[str]) -> TrainingConfig:
    """Read a ``TrainingConfig`` from a YAML file."""
    return parse_config(read_yaml(path), source=os.fspath(path))
