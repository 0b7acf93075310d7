"""Checks at submission: everything that would make a job fail, found before any worker starts.

``check_submission`` resolves the config against the store (the dataset version and
its columns), the architecture registry (the architecture, its config and what it
takes and returns) and the cluster (whether its workers can ever be placed). Each
problem is an ``InvalidInputError`` or ``NotFoundError`` naming the setting and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from factory.errors import InvalidInputError, NotFoundError
from factory.train._resources import check_resources, worker_bundle
from factory.train.config import TrainingConfig

if TYPE_CHECKING:
    import pyarrow as pa

    from factory.contract import Architecture, ArchitectureRegistry, Signature
    from factory.store import DatasetVersion, Store

__all__ = ["Submission", "check_submission", "check_cluster", "check_variant", "task_of"]

Task = Literal["classification", "regression"]
_TASKS: dict[str, Task] = {"tabular-classification": "classification", "tabular-regression": "regression"}


@dataclass(frozen=True)
class Submission:
    """A config resolved against the store and the registry: what the job will read and build."""

    config: TrainingConfig
    dataset: DatasetVersion
    architecture: Architecture
    signature: Signature
    task: Task
    classes: int | None
    rows: int
    train_rows: int
    validation_rows: int

    @property
    def steps_per_epoch(self) -> int:
        return self.train_rows // self.config.hyperparameters.batch_size


def task_of(arch: Architecture) -> Task:
    task = _TASKS.get(arch.task or "")
    if task is None:
        raise InvalidInputError(
            f"architecture {arch.label} does the task {arch.task!r}; factory train runs tabular classification "
            "and regression architectures (e.g. mlp-classifier@1, mlp-regressor@1)"
        )
    return task


def _dataset(store: Store, digest: str) -> DatasetVersion:
    try:
        return store.datasets.get(digest)
    except NotFoundError:
        raise NotFoundError(
            f"dataset {digest} is not a dataset version in the store at {store.home}: check the digest "
            "('factory dataset list' and 'factory dataset show NAME' print them), or point --home at the store "
            "that holds it"
        ) from None


def _check_columns(config: TrainingConfig, version: DatasetVersion) -> None:
    names = [name for name, _ in version.schema]
    missing = [c for c in (config.label, *config.features) if c not in names]
    if missing:
        role = "label column" if missing == [config.label] else "column(s)"
        raise InvalidInputError(
            f"dataset {version.ref or version.digest} has no {role} {', '.join(repr(c) for c in missing)}: "
            f"choose among {', '.join(names)}"
        )


def _numeric(table: pa.Table, column: str, what: str, *, integer: bool = False) -> None:
    import pyarrow as pa

    kind = table.schema.field(column).type
    ok = pa.types.is_integer(kind) or pa.types.is_boolean(kind)
    if not integer:
        ok = ok or pa.types.is_floating(kind)
    if not ok:
        want = "integer or boolean class ids" if integer else "numbers"
        raise InvalidInputError(
            f"{what} {column!r} holds {kind}; it must hold {want}: encode it as such in a new dataset version"
        )
    nulls = table.column(column).null_count
    if nulls:
        raise InvalidInputError(
            f"{what} {column!r} has {nulls} null value(s): fill or drop them in a new dataset version"
        )


def _check_values(config: TrainingConfig, table: pa.Table, task: Task, classes: int | None) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in config.features:
        _numeric(table, column, "feature column")
    _numeric(table, config.label, "label column", integer=task == "classification")
    if task == "classification" and table.num_rows:
        label = table.column(config.label)
        if not pa.types.is_boolean(label.type):
            bounds = pc.min_max(label)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low < 0 or high >= classes:
                raise InvalidInputError(
                    f"label column {config.label!r} holds class ids {low}..{high}, and the architecture has "
                    f"{classes} classes (0..{classes - 1}): set architecture_config.out_features to {high + 1} "
                    "or re-encode the labels"
                )


def _architecture(config: TrainingConfig, registry: ArchitectureRegistry) -> tuple[Architecture, Signature, Task, int | None]:
    arch = registry.get(config.architecture_name, config.architecture_version)
    task = task_of(arch)
    signature = arch.expected(config.architecture_config)
    if signature is None:
        raise InvalidInputError(
            f"architecture {arch.label} declares no signature, so its outputs cannot be checked against the data: "
            "declare one where it is registered"
        )
    if signature.input_width is not None and signature.input_width != len(config.features):
        raise InvalidInputError(
            f"architecture_config gives {arch.label} {signature.input_width} input values per row, and the config "
            f"lists {len(config.features)} feature columns: set architecture_config.in_features to "
            f"{len(config.features)} or change the features"
        )
    outputs = {o.name: o for o in signature.outputs}
    if task == "classification":
        probabilities = outputs.get("probabilities")
        if probabilities is None or len(probabilities.shape) != 2 or probabilities.shape[1] < 2:
            raise InvalidInputError(f"{arch.label} gives no 'probabilities' output of shape [-1, classes]")
        return arch, signature, task, probabilities.shape[1]
    prediction = outputs.get("prediction")
    if prediction is None or tuple(prediction.shape) != (-1, 1):
        width = prediction.shape[1:] if prediction is not None else "none"
        raise InvalidInputError(
            f"{arch.label} predicts {width} values per row; one label column needs exactly one: "
            "set architecture_config.out_features to 1"
        )
    return arch, signature, task, None


def check_submission(
    config: TrainingConfig,
    store: Store,
    *,
    registry: ArchitectureRegistry | None = None,
    nodes: Sequence[Mapping[str, float]] | Callable[[], Sequence[Mapping[str, float]]] | None = None,
) -> Submission:
    """Resolve ``config`` or raise naming what is wrong. ``nodes``: each node's total resources
    (or a function returning them); ``None`` skips the cluster check."""
    from factory.contract import default_registry

    registry = registry or default_registry()
    arch, signature, task, classes = _architecture(config, registry)
    version = _dataset(store, config.dataset)
    _check_columns(config, version)
    table = store.datasets.read(version, columns=[config.label, *config.features])
    _check_values(config, table, task, classes)

    train_rows, validation = _split_rows(config, version)
    if nodes is not None:
        check_cluster(config, nodes() if callable(nodes) else nodes)
    return Submission(config, version, arch, signature, task, classes, version.num_rows, train_rows, validation)


def _split_rows(config: TrainingConfig, version: DatasetVersion) -> tuple[int, int]:
    rows = version.num_rows
    validation = int(rows * config.hyperparameters.validation_fraction)
    train_rows = rows - validation
    batch = config.hyperparameters.batch_size
    if train_rows < batch:
        raise InvalidInputError(
            f"dataset {version.ref or version.digest} leaves {train_rows} training rows, fewer than one batch of "
            f"{batch}: lower hyperparameters.batch_size (or validation_fraction)"
        )
    workers = config.compute.workers
    if validation and validation < workers:
        raise InvalidInputError(
            f"validation_fraction {config.hyperparameters.validation_fraction} holds out {validation} rows, fewer "
            f"than the {workers} workers that share them: raise it, or set it to 0 for no validation metrics"
        )
    return train_rows, validation


def check_variant(sub: Submission, config: TrainingConfig, *, registry: ArchitectureRegistry | None = None) -> None:
    """Check a variant of a checked config (a sweep's trial) without reading the data again."""
    from factory.contract import default_registry

    _, _, _, classes = _architecture(config, registry or default_registry())
    if classes != sub.classes:
        raise InvalidInputError(
            f"the variant's architecture_config gives {classes} classes where the data has been checked for "
            f"{sub.classes}: leave out_features out of the sweep"
        )
    _split_rows(config, sub.dataset)


def check_cluster(config: TrainingConfig, nodes: Sequence[Mapping[str, float]]) -> None:
    """Refuse a job whose workers the cluster (``nodes``: each node's total resources) can never place."""
    bundle = worker_bundle(config.compute.resources_per_worker(), config.compute.accelerator)
    check_resources(config.compute.workers, bundle, nodes)
