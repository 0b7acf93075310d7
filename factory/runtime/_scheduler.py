"""Pipeline scheduling: a plain class that runs pipeline runs step by step, keeping nothing the store
does not also hold.

A pipeline run is a store run of kind ``pipeline`` (config: the ``Plan``; key: the pipeline's
name and the submission's request id, so the same submission twice is one run). Each step is
a run of kind ``pipeline-step`` (parents: the pipeline run and the step's input digests; key:
``step_key``), started when every step it waits for has succeeded:

- a key that already succeeded is **reused**: its outputs are taken and a ``reused`` event is
  recorded on the pipeline run; nothing runs;
- otherwise the step is launched (a Ray task, or in the controller for rollouts) and its result
  recorded: each output through ``run.output`` (its parents then include the step's run, whose
  parents are the inputs), then ``succeeded``;
- a failed attempt is retried after ``retry_delay_s`` (doubling) while retries remain, unless it
  failed on bad input (a ``UserError``, which no retry fixes); then the step fails, nothing
  downstream starts, and once running steps finish the pipeline run fails with the step's error.

Every transition is an event on the pipeline run (see ``_progress``), written by this class
only. ``adopt`` rebuilds a run from its events (after the controller restarted): steps that
ended stay ended, steps that were under way go through ``runs.start`` again, which reuses what
committed and takes over what did not, so no committed step runs twice.

Threads: commands (``submit``, ``cancel``) come from the controller's callers, results from
launchers' threads; all state changes happen under one lock, and results and timers are
queued and applied by ``pump`` (the controller's loop thread; tests call it directly with a
fake clock).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from factory.errors import InvalidInputError, NotFoundError, RunInProgressError, UserError
from factory.runtime._plan import Plan, PlannedStep, step_key
from factory.runtime._progress import replay
from factory.runtime._spec import StepOutput
from factory.runtime._task import StepResult, StepTask

if TYPE_CHECKING:
    from factory.store import Run, Store

__all__ = ["Scheduler", "Launcher", "PIPELINE_KIND", "STEP_KIND", "pipeline_key", "describe_error"]

log = logging.getLogger(__name__)

PIPELINE_KIND = "pipeline"
STEP_KIND = "pipeline-step"
_WAIT_RECHECK_S = 2.0  # how soon a step whose key another process runs is tried again
_HEARTBEAT_S = 60.0  # runs this controller owns say so this often (readers on other hosts go by it)


class Launcher(Protocol):
    """Where steps run: ``launch`` starts an attempt and calls ``done`` (any thread) with its
    ``StepResult`` or the exception it failed with; ``cancel`` stops it."""

    def launch(self, task: StepTask, done: Callable[[StepResult | BaseException], None]) -> Any: ...

    def cancel(self, handle: Any) -> None: ...


def pipeline_key(name: str, request_id: str) -> str:
    return f"pipeline:{name}:{request_id}"


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of what a step raised (a Ray task error's cause, not its traceback)."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    return f"{type(exc).__name__}: {exc}"


def _retryable(exc: BaseException) -> bool:
    cause = getattr(exc, "cause", None)
    return not isinstance(cause if isinstance(cause, BaseException) else exc, UserError)


@dataclass
class _Attempt:
    run: Run
    inputs: dict[str, str]
    attempt: int
    started: float
    handle: Any = None
    key: str = ""


@dataclass
class _Pipeline:
    run: Run
    plan: Plan
    done: dict[str, dict[str, str]] = field(default_factory=dict)  # step -> outputs
    ended: set[str] = field(default_factory=set)  # failed, skipped, cancelled
    running: dict[str, _Attempt] = field(default_factory=dict)
    retrying: dict[str, _Attempt] = field(default_factory=dict)  # failed, the next attempt on a timer
    waiting: set[str] = field(default_factory=set)  # for a run of its key elsewhere (another pipeline, process)
    announced: set[str] = field(default_factory=set)  # waiting steps whose wait is recorded
    failure: tuple[str, str] | None = None
    cancelled: tuple[str, str] | None = None  # (by, reason)


class Scheduler:
    """Runs pipeline runs on ``launchers`` (by where a step runs: ``task``, ``controller``)."""

    def __init__(self, store: Store, launchers: Mapping[str, Launcher], *,
                 clock: Callable[[], float] = time.monotonic, on_change: Callable[[str], None] | None = None):
        self.store = store
        self.launchers = dict(launchers)
        self.clock = clock
        self.on_change = on_change
        self._lock = threading.RLock()
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._pipelines: dict[str, _Pipeline] = {}
        self._keys: dict[str, str] = {}  # step key -> the step run running it here
        self._key_waiters: dict[str, list[tuple[str, str]]] = {}
        self._next_heartbeat = clock() + _HEARTBEAT_S

    # -- commands ----------------------------------------------------------------------
    def submit(self, plan: Plan, request_id: str) -> str:
        """Start ``plan`` as a pipeline run (or return the run this request id already has)."""
        key = pipeline_key(plan.name, request_id)
        try:
            run = self.store.runs.start(PIPELINE_KIND, config=plan, key=key, name=plan.name)
        except RunInProgressError as exc:  # running already: under this controller, or (briefly) its predecessor
            if exc.run_id:
                return exc.run_id
            raise
        if not run.reused:
            self.adopt(run)
        return run.id

    def adopt(self, run: Run) -> None:
        """Host ``run`` (new, or taken over): rebuild its steps from its events, then go on."""
        with self._lock:
            if run.id in self._pipelines:
                return
            plan = Plan.model_validate(run.config)
            pipe = _Pipeline(run, plan)
            progress = replay([s.name for s in plan.steps], run.events())
            for name, step in progress.items():
                if step.done:
                    pipe.done[name] = dict(step.outputs)
                elif step.state == "failed" and pipe.failure is None:
                    pipe.failure = (name, step.error or "failed")
                    pipe.ended.add(name)
                elif step.state in ("skipped", "cancelled"):
                    pipe.ended.add(name)
            self._pipelines[run.id] = pipe
            self._advance(pipe)

    def cancel(self, run_id: str, *, by: str, reason: str) -> bool:
        """Stop a pipeline run hosted here: running steps are cancelled, pending ones skipped.
        False when this scheduler does not host it."""
        with self._lock:
            pipe = self._pipelines.get(run_id)
            if pipe is None:
                return False
            if pipe.cancelled is None:
                pipe.cancelled = (by, reason)
                for name, attempt in [*pipe.running.items(), *pipe.retrying.items()]:
                    if name in pipe.running:
                        self.launchers[pipe.plan.step(name).where].cancel(attempt.handle)
                    attempt.run.finish("cancelled", by=by, reason=reason)
                    pipe.ended.add(name)
                    self._record(pipe, "step-cancelled", step=name, run=attempt.run.id)
                    self._release(attempt.key)
                pipe.running.clear()
                pipe.retrying.clear()
                pipe.waiting.clear()
                self._finish_if_idle(pipe)
            return True

    def hosted(self) -> list[str]:
        with self._lock:
            return list(self._pipelines)

    # -- the loop ----------------------------------------------------------------------
    def pump(self, timeout: float = 0.0) -> int:
        """Apply queued results and due timers; with none, wait up to ``timeout`` s for one. Returns how many."""
        applied = self._drain()
        if applied or timeout <= 0:
            return applied
        wait = min(timeout, max(0.0, self._next_timer() - self.clock()))
        try:
            item = self._inbox.get(timeout=wait) if wait > 0 else None
        except queue.Empty:
            item = None
        if item is not None:
            self._apply(*item)
            applied += 1
        return applied + self._drain()

    def _drain(self) -> int:
        applied = 0
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                fired = self._fire_timers()
                if fired == 0:
                    return applied
                applied += fired
                continue
            self._apply(*item)
            applied += 1

    def wake(self) -> None:
        """Make a ``pump`` that waits return at once (the controller stops with it)."""
        self._inbox.put(("wake", None))

    def _next_timer(self) -> float:
        with self._lock:
            heartbeat = self._next_heartbeat
            return min(self._timers[0][0], heartbeat) if self._timers else heartbeat

    def _after(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.clock() + delay, next(self._seq), action))

    def _fire_timers(self) -> int:
        fired = 0
        with self._lock:
            now = self.clock()
            while self._timers and self._timers[0][0] <= now:
                _, _, action = heapq.heappop(self._timers)
                action()
                fired += 1
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + _HEARTBEAT_S
                self._heartbeat()
        return fired

    def _heartbeat(self) -> None:
        for pipe in self._pipelines.values():
            pipe.run.heartbeat()
            for attempt in [*pipe.running.values(), *pipe.retrying.values()]:
                attempt.run.heartbeat()

    def _apply(self, kind: str, payload: Any) -> None:
        if kind == "done":
            run_id, name, attempt, outcome = payload
            with self._lock:
                pipe = self._pipelines.get(run_id)
                current = pipe.running.get(name) if pipe is not None else None
                if current is None or current.attempt != attempt:
                    return  # a cancelled or superseded attempt
                if isinstance(outcome, BaseException):
                    self._failed_attempt(pipe, name, current, outcome)
                else:
                    self._succeeded(pipe, name, current, outcome)

    # -- steps -------------------------------------------------------------------------
    def _record(self, pipe: _Pipeline, event: str, **details: Any) -> None:
        pipe.run.event("running", event=event, **details)
        self._changed(pipe)

    def _changed(self, pipe: _Pipeline) -> None:
        if self.on_change is not None:
            self.on_change(pipe.run.id)

    def _advance(self, pipe: _Pipeline) -> None:
        """Start every step whose upstream steps all succeeded; end the run when nothing is left."""
        progressed = True
        while progressed and pipe.failure is None and pipe.cancelled is None:
            progressed = False
            for name in pipe.plan.order():
                if (name in pipe.done or name in pipe.ended or name in pipe.running or name in pipe.retrying
                        or name in pipe.waiting):
                    continue
                step = pipe.plan.step(name)
                if not step.upstream() <= set(pipe.done):
                    continue
                if self._start(pipe, step):
                    progressed = True  # reused: its outputs may make more steps ready
        self._finish_if_idle(pipe)

    def _inputs(self, pipe: _Pipeline, step: PlannedStep) -> dict[str, str]:
        inputs = {}
        for name, ref in step.step_inputs().items():
            if isinstance(ref, StepOutput):
                produced = pipe.done[ref.step]
                if ref.output not in produced:
                    raise InvalidInputError(f"input {name!r} reads {ref}, but step {ref.step!r} made no output "
                                            f"{ref.output!r} (it made: {', '.join(sorted(produced)) or 'none'})")
                inputs[name] = produced[ref.output]
            else:
                inputs[name] = ref
        return inputs

    def _start(self, pipe: _Pipeline, step: PlannedStep) -> bool:
        """Start ``step``; True when it was reused (so it is done now)."""
        try:
            inputs = self._inputs(pipe, step)
            key = step_key(step, inputs)
            if key in self._keys:  # another pipeline here runs this very step: take its result when it ends
                self._wait_for(pipe, step.name, key, self._keys[key])
                return False
            config = {"pipeline": pipe.plan.name, "pipeline_run": pipe.run.id, "step": step.name, "type": step.type,
                      "function": step.function, "config": step.config, "inputs": inputs, "code": step.code,
                      "runtime_env": step.runtime_env}
            run = self.store.runs.start(STEP_KIND, config=config, parents=[pipe.run.digest, *inputs.values()],
                                        key=key, name=f"{pipe.plan.name}/{step.name}")
        except RunInProgressError as exc:  # another process runs this key: look again shortly
            self._wait_for(pipe, step.name, None, exc.run_id)
            self._after(_WAIT_RECHECK_S, lambda: self._stop_waiting(pipe, step.name))
            return False
        except UserError as exc:
            self._step_failed(pipe, step.name, None, describe_error(exc))
            return False
        pipe.announced.discard(step.name)
        if run.reused:
            outputs = run.outputs()
            pipe.done[step.name] = outputs
            self._record(pipe, "reused", step=step.name, run=run.id, outputs=outputs)
            return True
        self._keys[key] = run.id
        self._launch(pipe, step, _Attempt(run, inputs, 1, self.clock(), key=key))
        return False

    def _wait_for(self, pipe: _Pipeline, name: str, key: str | None, run_id: str) -> None:
        pipe.waiting.add(name)
        if key is not None:
            self._key_waiters.setdefault(key, []).append((pipe.run.id, name))
        if name not in pipe.announced:
            pipe.announced.add(name)
            self._record(pipe, "step-waiting", step=name, run=run_id)

    def _stop_waiting(self, pipe: _Pipeline, name: str) -> None:
        pipe.waiting.discard(name)
        if pipe.run.id in self._pipelines and pipe.cancelled is None and pipe.failure is None:
            self._advance(pipe)

    def _release(self, key: str) -> None:
        """The run of ``key`` ended here: steps of other pipelines waiting for it go on."""
        self._keys.pop(key, None)
        for run_id, name in self._key_waiters.pop(key, []):
            pipe = self._pipelines.get(run_id)
            if pipe is not None:
                self._stop_waiting(pipe, name)

    def _launch(self, pipe: _Pipeline, step: PlannedStep, attempt: _Attempt) -> None:
        settings = replace(self.store.settings, actor=pipe.plan.submitted_by)
        task = StepTask(pipeline=pipe.plan.name, pipeline_run=pipe.run.id, step=step, run_id=attempt.run.id,
                        inputs=attempt.inputs, attempt=attempt.attempt, home=self.store.home, settings=settings)
        pipe.running[step.name] = attempt
        self._record(pipe, "step-started", step=step.name, run=attempt.run.id, attempt=attempt.attempt)
        run_id, name, number = pipe.run.id, step.name, attempt.attempt

        def done(outcome: StepResult | BaseException) -> None:
            self._inbox.put(("done", (run_id, name, number, outcome)))

        try:
            attempt.handle = self.launchers[step.where].launch(task, done)
        except Exception as exc:  # the cluster refused it (resources no node has, a bad runtime_env)
            done(exc)
        if step.timeout_s is not None:
            self._after(step.timeout_s, lambda: self._timed_out(pipe, name, number, step.timeout_s))

    def _timed_out(self, pipe: _Pipeline, name: str, number: int, timeout_s: float) -> None:
        current = pipe.running.get(name)
        if current is None or current.attempt != number:
            return
        self.launchers[pipe.plan.step(name).where].cancel(current.handle)
        self._failed_attempt(pipe, name, current, TimeoutError(f"attempt {number} ran longer than {timeout_s:g} s"))

    def _succeeded(self, pipe: _Pipeline, name: str, attempt: _Attempt, result: StepResult) -> None:
        del pipe.running[name]
        run = attempt.run
        duration = round(self.clock() - attempt.started, 3)
        try:
            outputs = {}
            for output, digest in dict(result.outputs).items():
                run.output(output, digest)
                outputs[output] = digest
            for step_no, values in dict(result.metrics).items():
                run.log_metrics(int(step_no), values)
            run.finish("succeeded", outputs=outputs, duration_s=duration, attempts=attempt.attempt,
                       **dict(result.details))
        except UserError as exc:  # an output that is not a stored digest, details that are not JSON
            self._step_failed(pipe, name, attempt, describe_error(exc))
            return
        pipe.done[name] = outputs
        self._record(pipe, "step-succeeded", step=name, run=run.id, outputs=outputs, duration_s=duration)
        self._release(attempt.key)
        self._advance(pipe)

    def _failed_attempt(self, pipe: _Pipeline, name: str, attempt: _Attempt, exc: BaseException) -> None:
        step = pipe.plan.step(name)
        error = describe_error(exc)
        del pipe.running[name]
        if attempt.attempt > step.retries or not _retryable(exc) or pipe.cancelled is not None:
            self._step_failed(pipe, name, attempt, error)
            return
        delay = step.retry_delay_s * 2 ** (attempt.attempt - 1)
        attempt.run.event("retrying", attempt=attempt.attempt, error=error, delay_s=delay)
        self._record(pipe, "step-retrying", step=name, run=attempt.run.id, attempt=attempt.attempt, error=error,
                     delay_s=delay)
        pipe.retrying[name] = attempt

        def again() -> None:
            if pipe.retrying.pop(name, None) is not None:  # not cancelled meanwhile
                self._launch(pipe, step, replace(attempt, attempt=attempt.attempt + 1, handle=None))

        self._after(delay, again)

    def _step_failed(self, pipe: _Pipeline, name: str, attempt: _Attempt | None, error: str) -> None:
        """End ``name`` as failed (its run too, if it has one); the pipeline fails once nothing runs."""
        attempts = 0
        if attempt is not None:
            attempts = attempt.attempt
            attempt.run.finish("failed", error=error, attempts=attempts)
            self._release(attempt.key)
        pipe.ended.add(name)
        self._record(pipe, "step-failed", step=name, run=attempt.run.id if attempt else None, error=error,
                     attempts=attempts)
        if pipe.failure is None:
            pipe.failure = (name, error)
        self._finish_if_idle(pipe)

    def _finish_if_idle(self, pipe: _Pipeline) -> None:
        """End the run once every step succeeded, or, after a failure or cancel, once nothing runs."""
        if pipe.running or pipe.retrying or pipe.run.id not in self._pipelines:
            return
        names = [s.name for s in pipe.plan.steps]
        if pipe.failure is None and pipe.cancelled is None:
            if len(pipe.done) < len(names):
                return
            pipe.run.finish("succeeded", event="succeeded", steps=len(names))
        else:
            reason = f"step {pipe.failure[0]!r} failed" if pipe.cancelled is None else "the pipeline was cancelled"
            for name in names:
                if name not in pipe.done and name not in pipe.ended:
                    pipe.ended.add(name)
                    self._record(pipe, "step-skipped", step=name, reason=reason)
            pipe.waiting.clear()
            if pipe.cancelled is not None:
                by, why = pipe.cancelled
                pipe.run.finish("cancelled", event="cancelled", by=by, reason=why)
            else:
                step, error = pipe.failure
                pipe.run.finish("failed", event="failed", step=step, error=error)
        del self._pipelines[pipe.run.id]
        self._changed(pipe)


def take_over_to_cancel(store: Store, run: Run, *, by: str, reason: str) -> Run:
    """Cancel a pipeline run nobody hosts (its controller is gone): done in the store alone."""
    if run.state != "interrupted":
        raise InvalidInputError(f"pipeline run {run.id} is {run.state}, not interrupted")
    taken = store.runs.start(PIPELINE_KIND, config=run.config, key=run.key, name=run.name)
    if taken.id != run.id:
        raise NotFoundError(f"pipeline run {run.id} could not be taken over (its key now belongs to {taken.id})")
    plan = Plan.model_validate(taken.config)
    for name, step in replay([s.name for s in plan.steps], taken.events()).items():
        if step.state in ("running", "retrying", "waiting") and step.run:
            step_run = store.runs.get(step.run)
            if step_run.state == "interrupted":
                store.runs.start(STEP_KIND, config=step_run.config, key=step_run.key).finish(
                    "cancelled", by=by, reason=reason)
            taken.event("running", event="step-cancelled", step=name, run=step.run)
        elif not step.ended:
            taken.event("running", event="step-skipped", step=name, reason="the pipeline was cancelled")
    taken.finish("cancelled", event="cancelled", by=by, reason=reason)
    return taken
