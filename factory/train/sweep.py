"""``tune``: a Ray Tune sweep over a training config with ASHA; the best trial becomes the package.

Each trial is a function trainable that runs the trial's config as a Ray Train
``TorchTrainer`` and passes its reports on to Tune through
``ray.tune.integration.ray_train.TuneReportCallback``; ASHA compares trials on the
sweep's metric at each epoch and stops the weak ones. Trials reserve only a sliver of
CPU for themselves (their workers reserve the rest), and as many run at once as the
cluster can hold. Ray Train inside Tune needs the dashboard (the State API), without
which finished trials leak placement groups and later trials hang, so ``tune`` starts
a local cluster with it (and tells every process of the job which cluster is theirs,
see ``_cluster.connect``).

The sweep is recorded as a run of kind ``tune`` and every trial as a ``train`` run whose
parents include the sweep's run (see ``_trials``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from factory.errors import FactorySystemError, InvalidInputError
import factory.train._checkpoint as ckpt
from factory.train._cluster import connect, report_interval, warm_up
from factory.train._record import RunRecord, record_inputs
from factory.train._resources import cluster_nodes
from factory.train._trials import METRICS, TrialRecorder, settle_reports, tune_callback
from factory.train.config import TrainingConfig, _Frozen, parse_settings, read_yaml
from factory.train.job import TrainResult, loop_spec, package_checkpoint, trainer_for
from factory.train.provenance import capture_code, capture_environment
from factory.train.submission import check_cluster, check_submission, check_variant

if TYPE_CHECKING:
    from factory.contract import ArchitectureRegistry
    from factory.store import Store

__all__ = ["Distribution", "SweepConfig", "TrialSummary", "SweepResult", "load_sweep", "tune"]

log = logging.getLogger(__name__)

SWEEP_KIND = "tune"
_SWEEPABLE = ("hyperparameters.", "architecture_config.")
_TRIAL_CPU = 0.05


class Distribution(_Frozen):
    """Where one setting's values come from: exactly one of the forms below."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: tuple[Any, ...] | None = Field(None, min_length=1)
    grid: tuple[Any, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [name for name, value in self if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, randint, choice or grid")
        low_high = self.uniform or self.loguniform or self.randint
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"the bounds {list(low_high)} must be [low, high] with low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        return self

    def example(self) -> Any:
        """A value the distribution can produce, to check the setting it fills."""
        if self.choice or self.grid:
            return (self.choice or self.grid)[0]
        return (self.uniform or self.loguniform or self.randint)[0]

    def to_tune(self) -> Any:
        from ray import tune

        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        if self.randint is not None:
            return tune.randint(self.randint[0], self.randint[1] + 1)  # inclusive, as written
        if self.choice is not None:
            return tune.choice(list(self.choice))
        return tune.grid_search(list(self.grid))

    def values(self) -> tuple[Any, ...]:
        """Every value a discrete distribution can produce (empty for continuous ones)."""
        return tuple(self.choice or self.grid or ())


class SweepConfig(_Frozen):
    """A training config and the search over it: space, samples, metric and ASHA's settings."""

    train: TrainingConfig
    space: dict[str, Distribution] = Field(min_length=1)
    num_samples: int = Field(4, ge=1, le=10_000)
    metric: Literal["train_loss", "val_loss", "val_accuracy", "val_rmse"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0, le=100.0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _cross_check(self) -> SweepConfig:
        epochs = self.train.epochs
        if self.grace_period > epochs:
            raise ValueError(f"grace_period {self.grace_period} exceeds train.epochs {epochs}: lower it")
        if self.metric.startswith("val_") and self.train.hyperparameters.validation_fraction == 0:
            raise ValueError(
                f"metric {self.metric} needs validation rows: set train.hyperparameters.validation_fraction above 0 "
                "or use metric: train_loss"
            )
        wants_max = self.metric == "val_accuracy"
        if (self.mode == "max") != wants_max:
            raise ValueError(f"metric {self.metric} is better when {'higher' if wants_max else 'lower'}: "
                             f"set mode: {'max' if wants_max else 'min'}")
        for path, dist in self.space.items():
            if not path.startswith(_SWEEPABLE):
                raise ValueError(f"space.{path}: a sweep varies hyperparameters.* and architecture_config.* only")
            for value in dist.values() or (dist.example(),):
                try:
                    self.train.with_overrides({path: value})
                except InvalidInputError as exc:
                    raise ValueError(f"space.{path} value {value!r}: {exc}") from None
        return self

    def to_json(self) -> bytes:
        from factory.store import canonical_json

        return canonical_json(self.model_dump(mode="json"))


def load_sweep(path: str | os.PathLike[str]) -> SweepConfig:
    """Read a ``SweepConfig`` (``train`` and ``space``) from a YAML file."""
    return parse_settings(SweepConfig, read_yaml(path), source=os.fspath(path))


@dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    epochs: int
    metrics: dict[str, float]
    status: str
    run: str | None = None  # the trial's run in the store


@dataclass(frozen=True)
class SweepResult:
    """The packaged best trial (as a ``TrainResult``) and a summary of every trial."""

    best: TrainResult
    best_trial: str
    params: dict[str, Any]
    trials: tuple[TrialSummary, ...]
    wall_s: float
    run: str | None = None  # the sweep's run (kind ``tune``); each trial's run is its child


def _trial(params: dict[str, Any], *, base: dict[str, Any], data: dict[str, Any], sweep: str,
           storage_path: str) -> None:
    """One trial: the base config with ``params`` applied, trained by Ray Train, reported to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from factory.train._data import DataSpec
    from factory.train._loop import LoopSpec

    config = TrainingConfig.model_validate(base).with_overrides(params)
    spec = LoopSpec(config.to_json(), DataSpec(**data["spec"]), data["task"],
                    data["train_rows"] // config.hyperparameters.batch_size)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = trainer_for(spec, name=f"{sweep}-{trial_id}", storage_path=storage_path,
                          callbacks=[TuneReportCallback()])
    trainer.fit()
    settle_reports()  # Ray 2.60: returning before Tune took the last report can hang the trial


def _concurrency(config: TrainingConfig, nodes: Sequence[Mapping[str, float]]) -> int:
    per_trial = _TRIAL_CPU + config.compute.workers * config.compute.cpus_per_worker
    cpus = sum(n.get("CPU", 0.0) for n in nodes)
    return max(1, math.floor(cpus / per_trial + 1e-9))


def _storage_filesystem(storage: str) -> Any:
    """The ``pyarrow.fs`` filesystem of a storage URI (``None`` for a local folder)."""
    if "://" not in storage:
        return None
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(storage)[0]


def tune(
    sweep: SweepConfig,
    *,
    store: Store,
    registry: ArchitectureRegistry | None = None,
    storage_path: str | None = None,
    code_root: str | None = None,
    entry: Sequence[str] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
    address: str | None = None,
    num_cpus: float | None = None,
) -> SweepResult:
    """Run the sweep on the connected cluster (a local one with the dashboard if none) and package the best trial.

    The sweep is a run of kind ``tune`` (its config: the sweep; its parents: the base
    config, dataset, code and environment); each trial is a ``train`` run whose parents
    add the sweep's run. The best trial's package has both runs among its parents and
    is the sweep run's output ``model``.
    """
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    started = time.perf_counter()
    base = sweep.train
    sub = check_submission(base, store, registry=registry)
    for path, dist in sweep.space.items():
        for value in dist.values() or (dist.example(),):
            check_variant(sub, base.with_overrides({path: value}), registry=registry)
    connect(address, num_cpus=num_cpus, dashboard=True)
    warm_up()
    nodes = cluster_nodes()
    check_cluster(base, nodes)
    code = capture_code(code_root, entry=tuple(entry))
    env = capture_environment()
    inputs = record_inputs(store, base, code, env)
    storage = storage_path or store.uri("tune")
    sweep_run = store.runs.start(SWEEP_KIND, config=sweep.model_dump(mode="json"), parents=inputs.parents(),
                                 name=base.name)
    name = f"{base.name}-{sweep_run.id}"
    recorder = TrialRecorder(store, base, inputs, sweep_run, checkpoint_filesystem=_storage_filesystem(storage))
    spec = loop_spec(sub, storage_options=store.storage_options)
    data = {"spec": spec.data.__dict__, "task": sub.task, "train_rows": sub.train_rows}
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(_trial, base=base.model_dump(mode="json"), data=data, sweep=name,
                                 storage_path=storage),
        {"CPU": _TRIAL_CPU},
    )
    # stop_last_trials=False: a trial that reaches the last epoch ends by itself, so Ray Train
    # shuts its workers down and frees their placement group; only trials ASHA stops early
    # are killed, and Ray Train's placement group cleaner (the State API) frees theirs.
    scheduler = ASHAScheduler(time_attr="epoch", max_t=base.epochs, grace_period=sweep.grace_period,
                              reduction_factor=sweep.reduction_factor, stop_last_trials=False)
    tuner = ray_tune.Tuner(
        trainable,
        param_space={path: dist.to_tune() for path, dist in sweep.space.items()},
        tune_config=ray_tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, scheduler=scheduler, num_samples=sweep.num_samples,
            search_alg=BasicVariantGenerator(random_state=sweep.seed,
                                             max_concurrent=sweep.max_concurrent_trials or _concurrency(base, nodes)),
        ),
        run_config=ray_tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                      callbacks=[tune_callback(recorder, progress)]),
    )
    try:
        with report_interval():
            grid = tuner.fit()
        trials = _summaries(grid, recorder)
        best = _best(sweep, trials, grid, name)
        result = _package_best(sweep, best, recorder, storage=f"{storage.rstrip('/')}/{name}-{best.trial_id}",
                               started=started, code_dirty=code.dirty, registry=registry)
    except BaseException as exc:
        recorder.abandon(exc)
        state = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        sweep_run.finish(state, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    return SweepResult(result, best.trial_id, best.params, tuple(trials), time.perf_counter() - started,
                       run=sweep_run.id)


def _summaries(grid: Any, recorder: TrialRecorder) -> list[TrialSummary]:
    trials = []
    for result in grid:
        metrics = {k: float(v) for k, v in (result.metrics or {}).items() if k in METRICS}
        trial_id = str((result.metrics or {}).get("trial_id", ""))
        record = recorder.records.get(trial_id)
        trials.append(TrialSummary(trial_id, dict(result.config or {}), int((result.metrics or {}).get("epoch", 0)),
                                   metrics, "error" if result.error else "ok", record.id if record else None))
    return trials


def _best(sweep: SweepConfig, trials: Sequence[TrialSummary], grid: Any, name: str) -> TrialSummary:
    finished = [t for t in trials if t.status == "ok" and sweep.metric in t.metrics]
    if not finished:
        errors = "; ".join(str(r.error) for r in grid if r.error)[:2000]
        raise FactorySystemError(f"no trial of sweep {name} finished with {sweep.metric}: {errors or 'no results'}")
    pick = min if sweep.mode == "min" else max
    return pick(finished, key=lambda t: t.metrics[sweep.metric])


def _package_best(sweep: SweepConfig, best: TrialSummary, recorder: TrialRecorder, *, storage: str, started: float,
                  code_dirty: bool, registry: ArchitectureRegistry | None) -> TrainResult:
    """Package the best trial's newest good checkpoint as the sweep run's output ``model``."""
    store = recorder.store
    config = sweep.train.with_overrides(best.params)
    best_sub = check_submission(config, store, registry=registry)
    trial = recorder.records[best.trial_id]
    # The sweep's run records the package; the checkpoint trees are the trial's.
    record = RunRecord(store, trial.inputs, config.name, recorder.sweep, checkpoints=dict(trial.checkpoints))
    with ckpt.newest_good(storage, config.compute.workers) as found:
        if found is None:
            raise FactorySystemError(f"the best trial {best.trial_id} of sweep {recorder.sweep.id} left no "
                                     "checkpoint that verifies")
        return package_checkpoint(best_sub, record, found[0], started=started, code_dirty=code_dirty,
                                  complete=False, parents=[trial.digest], registry=registry,
                                  details={"best_trial": best.trial_id, "trial_run": trial.id})
