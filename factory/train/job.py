"""``train``: a ``TrainingConfig`` in, a model package registered as a candidate out.

On the driver, in order: the config is checked against the store, the registry and the
cluster (``check_submission``); the code and environment are captured; the inputs are
recorded and the run started (an identical finished run is reused unless ``force``);
a Ray Train ``TorchTrainer`` runs ``train_loop`` on the workers with checkpoints every
epoch (or N steps) and ``FailureConfig(max_failures)``; the final checkpoint's weights
become a package through the contract, registered as ``model/<name>/candidates/<d12>``.

Reports flow from Ray Train's controller to the driver through a queue actor, so
progress, metric records and checkpoint records all happen here, in the driver's main
thread, while ``fit`` runs on another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.contract import ModelPackageMeta
from factory.errors import FactorySystemError
import factory.train._checkpoint as ckpt
from factory.train._cluster import connect, report_interval, warm_up
from factory.train._data import DataSpec
from factory.train._loop import LoopSpec, train_loop
from factory.train._package import package_weights, read_final_weights
from factory.train._record import RunRecord, record_inputs
from factory.train._resources import cluster_nodes
from factory.train.config import TrainingConfig
from factory.train.provenance import capture_code, capture_environment
from factory.train.submission import Submission, check_cluster, check_submission

if TYPE_CHECKING:
    from factory.contract import ArchitectureRegistry
    from factory.store import Store

__all__ = ["EpochReport", "TrainResult", "train", "trainer_for", "loop_spec", "package_checkpoint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """One report of a running job, as progress callbacks see it."""

    epoch: float
    epochs: int
    step: int
    metrics: dict[str, float]
    checkpoint: str | None = None
    resumed_from_step: int | None = None

    @property
    def end_of_epoch(self) -> bool:
        return "train_loss" in self.metrics


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or reused) run produced and what it was made of."""

    name: str
    model: str
    weights: str
    candidate: str
    config: str
    dataset: str
    code: str
    environment: str
    metrics: dict[str, float]
    history: tuple[dict[str, float], ...] = ()
    run: str | None = None
    checkpoint: str | None = None
    restarts: int = 0
    reused: bool = False
    resumed: bool = False
    wall_s: float = 0.0
    code_dirty: bool = False
    skipped_checkpoints: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def loop_spec(sub: Submission, *, storage_options: Mapping[str, str] | None = None,
              stored: ckpt.StoredCheckpoints | None = None) -> LoopSpec:
    """What the workers run: the config, where its rows are, and any stored checkpoints to resume from."""
    config = sub.config
    data = DataSpec(uri=sub.dataset.uri, lance_version=sub.dataset.lance_version, key=tuple(sub.dataset.key),
                    features=tuple(config.features), label=config.label, task=sub.task,
                    storage_options=dict(storage_options) if storage_options else None)
    return LoopSpec(config.to_json(), data, sub.task, sub.steps_per_epoch, stored)


class _Relay:
    """A Ray Train callback (on the controller) that forwards reports and worker failures to the driver's queue."""

    def __init__(self, queue: Any):
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        where = (checkpoint.path, checkpoint.filesystem) if checkpoint is not None else None
        self.queue.put({"metrics": dict(metrics[0]) if metrics else {}, "checkpoint": where})

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        failures = {str(rank): f"{type(exc).__name__}: {exc}"[:500] for rank, exc in worker_exceptions.items()}
        self.queue.put({"failed": failures})


def _relay_callback(queue: Any) -> Any:
    from ray.train import UserCallback

    return type("FactoryRelay", (_Relay, UserCallback), {})(queue)


def trainer_for(spec: LoopSpec, *, name: str, storage_path: str, callbacks: Sequence[Any] = ()) -> Any:
    """The ``TorchTrainer`` for a loop spec: scaling from the compute tier, failures and checkpoints from the config."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    config = spec.config
    compute = config.compute
    scaling = ScalingConfig(
        num_workers=compute.workers,
        use_gpu=compute.gpus_per_worker > 0,
        resources_per_worker=compute.resources_per_worker(),
        accelerator_type=compute.accelerator,
        placement_strategy="SPREAD" if compute.placement == "spread" else "PACK",
    )
    run = RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=FailureConfig(max_failures=config.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint.keep),
        callbacks=list(callbacks),
    )
    return TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec},
        scaling_config=scaling,
        torch_config=TorchConfig(backend="nccl" if compute.gpus_per_worker else "gloo"),
        run_config=run,
    )


def _report_queue() -> Any:
    """The queue the relay fills, held on the driver's own node: a queue anywhere else would die with
    its node, and with it the driver's view of a run that Ray Train itself recovers.

    Hard affinity: a soft one let a busy head place the queue on another node, which the fault
    test then removed (ActorUnavailableError in the driver). It needs no CPU, so it always fits.
    """
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})


class _Fit:
    """``trainer.fit()`` on a thread; its reports drained on the caller's."""

    def __init__(self, trainer: Any, queue: Any):
        self.trainer, self.queue = trainer, queue
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="factory-train-fit", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.trainer.fit()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def events(self) -> Any:
        from ray.util.queue import Empty

        with report_interval():
            self.thread.start()
            while self.thread.is_alive():
                try:
                    yield self.queue.get(timeout=0.2)
                except Empty:
                    continue
        while True:
            try:
                yield self.queue.get_nowait()
            except Empty:
                break


def _fit(sub: Submission, record: RunRecord, *, name: str, storage_path: str, spec: LoopSpec,
         progress: Callable[[EpochReport], None] | None) -> tuple[Any, int, int]:
    """Run the trainer, recording its reports on the run; returns (Ray's result, restarts, checkpoints skipped).

    ``restarts``: how many times a failed worker group was started again (a driver's
    resume of an interrupted run is not one; it shows as ``resumed_from_step``).

    Each epoch's metrics are recorded before its checkpoint, so a driver killed between
    the two resumes with the epoch in the series and trains it again only if its
    checkpoint was never recorded (the record still holds the epoch once).
    """
    config = sub.config
    queue = _report_queue()
    trainer = trainer_for(spec, name=name, storage_path=storage_path, callbacks=[_relay_callback(queue)])
    fit = _Fit(trainer, queue)
    restarts = skipped = 0
    try:
        for event in fit.events():
            if "failed" in event:
                # Ray Train restarts the worker group (FailureConfig); the new workers resume from the
                # newest checkpoint that verifies, or from the start if none was written yet.
                restarts += 1
                record.event("retrying", failed_workers=event["failed"])
                continue
            metrics = {k: float(v) for k, v in event["metrics"].items() if isinstance(v, (int, float))}
            resumed = metrics.pop("resumed_from_step", None)
            skipped += int(metrics.pop("skipped_checkpoints", 0))
            if resumed is not None:
                record.event("running", resumed_from_step=int(resumed))
            step, epoch = int(metrics.get("step", 0)), metrics.get("epoch", 0.0)
            where = event["checkpoint"]
            if "train_loss" in metrics:
                if where is not None and epoch > record.logged_epoch + 1:
                    # Reports before this one were lost with a worker: its checkpoint's history has them.
                    record.log_history(record.checkpoint(step, *where), sub.steps_per_epoch)
                record.log_epoch(step, metrics)
            tree = record.checkpoint(step, *where) if where is not None else None
            if progress is not None:
                progress(EpochReport(epoch, config.epochs, step, metrics, tree,
                                     int(resumed) if resumed is not None else None))
    finally:
        queue.shutdown(force=True)
    if fit.error is not None:
        from ray.train import TrainingFailedError

        if isinstance(fit.error, TrainingFailedError):
            raise FactorySystemError(
                f"training {config.name} failed after {config.max_failures} recoveries: {fit.error}"
            ) from fit.error
        raise fit.error
    return fit.result, restarts, skipped


def _reused(record: RunRecord, config: TrainingConfig, started: float, dirty: bool) -> TrainResult:
    artifact = record.store.artifacts.get(record.reused_model())
    meta = artifact.metadata
    return TrainResult(
        name=config.name, model=artifact.digest, weights=artifact.meta(ModelPackageMeta).weights_digest,
        candidate=record.register_candidate(artifact.digest), config=record.inputs.config,
        dataset=record.inputs.dataset, code=record.inputs.code, environment=record.inputs.environment,
        metrics=dict(meta.get("metrics", {})), run=record.id, reused=True,
        wall_s=time.perf_counter() - started, code_dirty=dirty,
    )


def package_checkpoint(sub: Submission, record: RunRecord, folder: str | Path, *, started: float, code_dirty: bool,
                       complete: bool = True, restarts: int = 0, skipped: int = 0, parents: Sequence[str] = (),
                       registry: ArchitectureRegistry | None = None,
                       details: Mapping[str, Any] | None = None) -> TrainResult:
    """Package the weights of a run's final checkpoint folder, register the candidate, finish the run.

    ``complete``: the checkpoint must stand at the config's last epoch (a sweep's trial
    stopped early by ASHA need not). The package's parents are the run's inputs, the
    run, the checkpoint's tree and ``parents`` (the trial's run, for a sweep's best
    trial); ``details`` go on the run's last event.
    """
    config = sub.config
    folder = Path(folder)
    weights = read_final_weights(folder, config.compute.workers)
    state = ckpt.TrainState.from_json((folder / ckpt.STATE_FILE).read_bytes())
    if complete and state.epoch != config.epochs:
        raise FactorySystemError(
            f"the final checkpoint of {config.name} stands at epoch {state.epoch} of {config.epochs}; rerun it"
        )
    metrics = {k: v for k, v in state.history[-1].items() if k != "epoch"}
    tree = record.checkpoint(state.step, str(folder))
    pkg = package_weights(record.store, sub, weights, record.inputs, metrics,
                          parents=[record.digest, tree, *parents], registry=registry)
    candidate = record.register_candidate(pkg.digest)
    record.finish(pkg.digest, metrics, **dict(details or {}))
    inputs = record.inputs
    return TrainResult(
        name=config.name, model=pkg.digest, weights=pkg.artifact.meta(ModelPackageMeta).weights_digest,
        candidate=candidate, config=inputs.config, dataset=inputs.dataset, code=inputs.code,
        environment=inputs.environment, metrics=metrics, history=tuple(state.history), run=record.id,
        checkpoint=tree, restarts=restarts, reused=False, resumed=record.resumed,
        wall_s=time.perf_counter() - started, code_dirty=code_dirty, skipped_checkpoints=skipped,
    )


def train(
    config: TrainingConfig | Mapping[str, Any],
    *,
    store: Store,
    registry: ArchitectureRegistry | None = None,
    force: bool = False,
    storage_path: str | None = None,
    code_root: str | None = None,
    entry: Sequence[str] = (),
    progress: Callable[[EpochReport], None] | None = None,
    address: str | None = None,
    num_cpus: float | None = None,
) -> TrainResult:
    """Train ``config`` on the connected Ray cluster (a local one is started if none is) and package it.

    ``force``: train again even if an identical run (same config, code and environment)
    finished before. ``storage_path``: where Ray Train keeps checkpoints (default
    ``<store home>/train``). ``code_root``: the working tree whose commit is recorded
    (default: the current directory); ``entry``: the script or config that was run.
    ``address``/``num_cpus``: the cluster to join, or the CPUs of a local one, when Ray
    is not connected yet. Everything about the config is checked before Ray is touched.
    """
    from factory.train.config import parse_config

    started = time.perf_counter()
    if not isinstance(config, TrainingConfig):
        config = parse_config(config, source="the training config")
    sub = check_submission(config, store, registry=registry)
    connect(address, num_cpus=num_cpus)
    check_cluster(config, cluster_nodes())
    code = capture_code(code_root, entry=tuple(entry))
    env = capture_environment()
    inputs = record_inputs(store, config, code, env)
    record = RunRecord.start(store, inputs, config, force=force)
    if record.reused:
        log.info("reusing the finished run %s of %s", record.id, config.name)
        return _reused(record, config, started, code.dirty)
    if record.resumed:
        log.info("resuming the interrupted run %s of %s from its checkpoints %s", record.id, config.name,
                 sorted(record.checkpoints))
    try:
        warm_up()
        stored = ckpt.StoredCheckpoints(store.home, store.settings, tuple(record.resume_points()))
        spec = loop_spec(sub, storage_options=store.storage_options, stored=stored if stored.points else None)
        # The Ray Train run is named after the store's run: a resumed run also finds Ray's own checkpoints.
        result, restarts, skipped = _fit(sub, record, name=f"{config.name}-{record.id}",
                                         storage_path=storage_path or store.uri("train"), spec=spec,
                                         progress=progress)
        if result.checkpoint is None:
            raise FactorySystemError(f"training {config.name} ended without a checkpoint; rerun it")
        with result.checkpoint.as_directory() as folder:
            return package_checkpoint(sub, record, folder, started=started, code_dirty=code.dirty,
                                      restarts=restarts, skipped=skipped, registry=registry)
    except BaseException as exc:
        record.fail(exc)
        raise
