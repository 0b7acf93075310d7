"""Rollouts hosted by the controller: one driving thread per live rollout, and the ``rollout`` step.

``RolloutHost`` drives each rollout it hosts with ``factory.serve.drive`` (commands queued
by operators are applied at each tick) on its own thread. At start the controller calls
``resume_all``: every rollout whose host died (its run reads ``interrupted``) is taken over,
which sets its traffic back to the last passed stage first, and driven on. Nothing is kept
that the rollout's run does not hold, so a host killed at any point is replaced by the
next with the same outcome; the environment's ref moves by compare-and-swap exactly once.

``rollout_step`` is the ``rollout`` pipeline step, run in the controller: it finds the
rollout it started before (a step taken over after a restart), or applies the promotion
rules and begins one, then waits for its outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from factory.errors import RolledBackError

if TYPE_CHECKING:
    from factory.runtime._task import StepContext, StepResult
    from factory.serve import Rollout, RolloutSpec, RolloutState
    from factory.store import Run, Store

__all__ = ["RolloutHost", "Parts", "default_parts", "rollout_step"]

log = logging.getLogger(__name__)

Parts = Callable[["Store", "RolloutSpec"], dict[str, Any]]
_RESTART_DRIVE_S = 5.0  # a driving loop that raised (serving unreachable) starts again after this


def default_parts(store: Store, spec: RolloutSpec) -> dict[str, Any]:
    """What a hosted rollout talks to: the serving layer's traffic control and signals."""
    try:
        from factory.serve import serving_parts  # the model servers' traffic seam (serve, pass two)
    except ImportError:
        from factory.serve import MemorySignals, MemoryTraffic

        log.warning("no serving layer is wired to the controller: rollout of %s records its traffic changes only",
                    spec.model)
        return {"traffic": MemoryTraffic(announce=True), "signals": MemorySignals()}
    return serving_parts(store, spec)


@dataclass
class _Hosted:
    rollout: Rollout
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class RolloutHost:
    """Drives rollouts in this process (see the module). ``drive`` and ``parts`` are injectable for tests."""

    def __init__(self, store: Store, parts: Parts = default_parts, *, tick_s: float = 1.0,
                 drive: Callable[..., RolloutState] | None = None):
        from factory.serve import drive as serve_drive

        self.store = store
        self.parts = parts
        self.tick_s = tick_s
        self._drive_fn = drive or serve_drive
        self._hosted: dict[str, _Hosted] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()

    # -- hosting -----------------------------------------------------------------------
    def resume_all(self) -> list[str]:
        """Take over and drive every rollout whose host is gone; their run ids."""
        from factory.serve import rollouts

        return [self.adopt(run).rollout.run.id for run in rollouts(self.store, live=True)
                if run.state == "interrupted"]

    def adopt(self, run: Run) -> _Hosted:
        """Host the rollout of ``run``: the one hosted here already, an ended one as it is, else taken over."""
        from factory.serve import MemorySignals, MemoryTraffic, Rollout, RolloutSpec, take_over

        with self._lock:
            hosted = self._hosted.get(run.id)
            if hosted is not None:
                return hosted
            spec = RolloutSpec.model_validate(run.config)
            if run.refresh().state in ("succeeded", "failed", "cancelled"):
                # An ended rollout is only read (a step resumed after it ended): no serving connection, so a
                # deployment deleted since cannot fail a step whose promotion succeeded.
                ended = _Hosted(Rollout.open(self.store, run, traffic=MemoryTraffic(), signals=MemorySignals()))
                ended.done.set()
                return ended
            return self._host(take_over(self.store, run, **self.parts(self.store, spec)))

    def begin(self, spec: RolloutSpec) -> _Hosted:
        """Begin rolling ``spec`` out (or pick up the run its key has) and drive it."""
        from factory.serve import Rollout

        with self._lock:
            for hosted in self._hosted.values():
                if hosted.rollout.run.key == spec.key:
                    return hosted
            rollout = Rollout.begin(self.store, spec, **self.parts(self.store, spec))
            if rollout.state.ended:
                hosted = _Hosted(rollout)
                hosted.done.set()
                return hosted
            return self._host(rollout)

    def _host(self, rollout: Rollout) -> _Hosted:
        hosted = _Hosted(rollout)
        self._hosted[rollout.run.id] = hosted
        hosted.thread = threading.Thread(target=self._drive, args=(hosted,), name=f"rollout-{rollout.run.id}",
                                         daemon=True)
        hosted.thread.start()
        return hosted

    def _drive(self, hosted: _Hosted) -> None:
        rollout = hosted.rollout
        try:
            while not self._stop.is_set():
                try:
                    self._drive_fn(rollout, tick_s=self.tick_s, stop=self._stop)
                    break
                except Exception:
                    log.exception("rollout %s: its driving loop failed; starting it again in %g s", rollout.run.id,
                                  _RESTART_DRIVE_S)
                    self._stop.wait(_RESTART_DRIVE_S)
        finally:
            with self._lock:
                if rollout.state.ended:
                    self._hosted.pop(rollout.run.id, None)
            hosted.done.set()

    def live(self) -> list[str]:
        with self._lock:
            return list(self._hosted)

    def wait(self, hosted: _Hosted, *, cancel: threading.Event | None = None, reason: str = "") -> RolloutState:
        """Wait for ``hosted`` to end; when ``cancel`` is set, roll it back (queued for its loop) first."""
        from factory.serve import post_command

        asked = False
        while not hosted.done.wait(0.2 if cancel is not None else None):
            if cancel is not None and cancel.is_set() and not asked:
                post_command(self.store, hosted.rollout.run.id, "rollback", reason or "the pipeline was cancelled")
                asked = True
        return hosted.rollout.state

    def stop(self, timeout: float = 5.0) -> None:
        """Stop driving (the rollouts stay live, to be taken over by the next host)."""
        self._stop.set()
        with self._lock:
            threads = [h.thread for h in self._hosted.values() if h.thread is not None]
        for thread in threads:
            thread.join(timeout)


# -- the pipeline step ------------------------------------------------------------------------

def _own_rollout(store: Store, model: str, env: str, candidate: str, since: datetime) -> Run | None:
    """The latest rollout of ``candidate`` in ``env`` begun since ``since`` (by this step, before a restart)."""
    from factory.serve import rollouts

    mine = [r for r in rollouts(store, model=model, env=env) if r.config.get("candidate") == candidate
            and r.started_at >= since]
    return mine[-1] if mine else None


def rollout_step(ctx: StepContext) -> StepResult:
    """The ``rollout`` step: admitted candidate in, its rollout's outcome out (see the module)."""
    from factory.contract import open_package
    from factory.runtime._step_types import step_type

    host: RolloutHost = ctx.services["rollouts"]
    rules = ctx.services["promotions"]
    cancel: threading.Event | None = ctx.services.get("cancel")
    config = step_type("rollout").config().model_validate(ctx.config)  # type: ignore[misc, union-attr]
    store = ctx.store
    candidate = store.artifacts.resolve(ctx.inputs["model"])
    model = open_package(store, candidate).contract.name
    since = store.runs.get(ctx.run_id).started_at
    run = _own_rollout(store, model, config.env, candidate, since)
    if run is None:
        plan = rules.plan(candidate, config.env, config.rollout)
        if plan.kind == "serving":
            ctx.details.update(outcome="serving", ref=plan.env_ref)
            return ctx.result({"model": candidate})
        if plan.kind == "first":
            change = rules.promote_first(plan, reason=f"first version of {model} in {config.env}, "
                                                      f"pipeline run {ctx.pipeline_run}")
            ctx.details.update(outcome="promoted", first=True, ref=plan.env_ref,
                               ref_seq=change.seq if change is not None else None)
            return ctx.result({"model": candidate})
        hosted = host.begin(plan.spec)
    else:
        hosted = host.adopt(run)
    reason = f"pipeline run {ctx.pipeline_run} was cancelled"
    state = host.wait(hosted, cancel=cancel, reason=reason)
    rollout_run = hosted.rollout.run
    ctx.details.update(outcome=state.outcome, rollout=rollout_run.id, ref=f"model/{model}/{config.env}")
    if state.outcome == "rolled-back" and not config.allow_rollback:
        raise RolledBackError(f"rollout {rollout_run.id} of {candidate} in {config.env} was rolled back: "
                              f"{state.note or 'see factory rollout status --run ' + rollout_run.id}",
                              rollout_run.id)
    if state.outcome is None:  # the controller is stopping: the next one takes the rollout over
        raise InterruptedError(f"rollout {rollout_run.id} is still live; the controller stopped hosting it")
    return ctx.result({"model": candidate, "rollout": rollout_run.digest})
