"""A sweep's trials as child runs: each trial of a ``tune`` run is a ``train`` run of its own.

The driver records everything, as it does for ``train``: a trial's run starts when
Tune starts the trial, with its own config (the sweep's base config with the trial's
hyperparameters, recorded as a ``training-config`` artifact whose parent is the
dataset), the code and environment, and the sweep's run as parents. Each epoch's
metrics join its series, each checkpoint its outputs (as a tree), and the run finishes
when Tune is done with the trial: ``succeeded`` (``stopped_early`` when ASHA stopped
it) or ``failed``. ``TrialRecorder`` is the plain logic; ``tune_callback`` the thin
Ray Tune adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from factory.train._record import Inputs, RunRecord, record_config

if TYPE_CHECKING:
    from factory.store import Run, Store
    from factory.train.config import TrainingConfig

__all__ = ["TrialRecorder", "tune_callback", "settle_reports", "METRICS"]

log = logging.getLogger(__name__)

METRICS = ("train_loss", "val_loss", "val_accuracy", "val_rmse")
_CHECKPOINT_PATH = "checkpoint_path"  # where TuneReportCallback puts the Ray Train checkpoint


class TrialRecorder:
    """The runs of one sweep's trials, kept as Tune reports on them.

    ``checkpoint_filesystem``: the ``pyarrow.fs`` filesystem of the sweep's storage
    (``None`` for local disk), where the trials' checkpoint paths point.
    """

    def __init__(self, store: Store, base: TrainingConfig, inputs: Inputs, sweep: Run, *,
                 checkpoint_filesystem: Any = None):
        self.store = store
        self.base = base
        self.inputs = inputs
        self.sweep = sweep
        self.filesystem = checkpoint_filesystem
        self.records: dict[str, RunRecord] = {}
        self.epochs: dict[str, int] = {}
        self.finished: set[str] = set()

    def start(self, trial_id: str, params: Mapping[str, Any]) -> RunRecord:
        """Start the trial's run (once: a restored trial keeps its run)."""
        if trial_id in self.records:
            return self.records[trial_id]
        config = self.base.with_overrides(dict(params))
        inputs = Inputs(record_config(self.store, config), self.inputs.dataset, self.inputs.code,
                        self.inputs.environment)
        record = RunRecord.start(self.store, inputs, config, force=True, parents=[self.sweep.digest])
        record.event("running", trial=trial_id, sweep=self.sweep.id, params=_plain(params))
        self.records[trial_id] = record
        return record

    def result(self, trial_id: str, params: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """One report of a trial: its epoch's metrics, and the checkpoint that came with it."""
        record = self.start(trial_id, params)
        metrics = {k: float(result[k]) for k in ("epoch", *METRICS) if _number(result.get(k))}
        step = int(result["step"]) if _number(result.get("step")) else 0
        if "train_loss" in metrics:
            record.log_epoch(step, metrics)
            self.epochs[trial_id] = int(metrics.get("epoch", 0))
        path = result.get(_CHECKPOINT_PATH)
        if isinstance(path, str) and path:
            record.checkpoint(step, path, self.filesystem)

    def complete(self, trial_id: str, params: Mapping[str, Any]) -> None:
        """Tune is done with the trial: it reached the last epoch, or ASHA stopped it."""
        if trial_id in self.finished:
            return
        record = self.start(trial_id, params)
        epochs = self.epochs.get(trial_id, 0)
        record.run.finish("succeeded", trial=trial_id, epochs=epochs, stopped_early=epochs < self.base.epochs)
        self.finished.add(trial_id)

    def error(self, trial_id: str, params: Mapping[str, Any], error: Any) -> None:
        if trial_id in self.finished:
            return
        record = self.start(trial_id, params)
        record.run.finish("failed", trial=trial_id, error=str(error or "the trial failed")[-2000:])
        self.finished.add(trial_id)

    def abandon(self, error: BaseException) -> None:
        """The sweep stopped: end every trial run still open, so none reads as running."""
        for trial_id, record in self.records.items():
            if trial_id not in self.finished:
                record.fail(error)
                self.finished.add(trial_id)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial hyperparameters as JSON holds them (Tune gives numpy scalars and tuples)."""
    out = {}
    for key, value in params.items():
        if hasattr(value, "item"):
            value = value.item()
        out[str(key)] = list(value) if isinstance(value, tuple) else value
    return out


def tune_callback(recorder: TrialRecorder, progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """A Ray Tune callback (it runs on the driver) feeding ``recorder`` and ``progress``."""
    from ray.tune import Callback

    class FactoryTrials(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            recorder.start(trial.trial_id, trial.config)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.result(trial.trial_id, trial.config, result)
            if progress is not None:
                shown = {k: v for k, v in result.items() if k in (*METRICS, "epoch", "step")}
                progress({"trial": trial.trial_id, **shown})

        def on_trial_complete(self, iteration, trials, trial, **info):
            recorder.complete(trial.trial_id, trial.config)

        def on_trial_error(self, iteration, trials, trial, **info):
            recorder.error(trial.trial_id, trial.config, trial.get_error())

    return FactoryTrials()


def settle_reports(session: Any = None, *, timeout_s: float = 60.0, quiet_s: float = 1.0,
                   poll_s: float = 0.05) -> bool:
    """In a trial, after ``trainer.fit()``: wait until Tune has taken the trial's last forwarded report.

    Works around a race in Ray 2.60's function trainable (seen once in a demo sweep, where the
    trial then hung for good): ``TuneReportCallback`` forwards each Train report through an
    inter-actor queue, which the trial's main thread moves into the session's result queue (one
    slot); when the training function returns, its thread puts a last result into that slot. If
    ``fit()`` returns before the main thread has moved the last forwarded report, the main thread
    blocks putting it into the slot it alone empties. So the function returns only once the
    forwarded queue and the result slot have both been empty for ``quiet_s`` (the main thread moves
    an item within that). Returns False if they were not within ``timeout_s``, or if this Ray has
    no such queues (nothing to wait for).
    """
    if session is None:
        from ray.train._internal.session import get_session

        session = get_session()
    forwarded = getattr(session, "_inter_actor_queue", None)
    results = getattr(session, "result_queue", None)
    if forwarded is None or results is None:
        return False
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if forwarded.empty() and results.empty():
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= quiet_s:
                return True
        else:
            quiet_since = None
        time.sleep(poll_s)
    log.warning("the trial's last report was not taken by Tune within %.0f s", timeout_s)
    return False
