"""What a pipeline run looks like from the store alone: its state and each step's progress, read
by ``factory status``, by clients waiting for a run, and by the demo."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from factory.errors import InvalidInputError, PipelineFailedError
from factory.runtime._progress import StepProgress, replay

if TYPE_CHECKING:
    from factory.store import Run, Store

__all__ = ["PipelineStatus", "pipeline_status", "wait_pipeline", "pipeline_runs", "ENDED_STATES"]

ENDED_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class PipelineStatus:
    """A pipeline run now: ``state`` (running, succeeded, failed, cancelled, interrupted), its steps in
    plan order, and for a failed run the step that failed and its error."""

    run_id: str
    name: str
    state: str
    started_at: str
    steps: tuple[StepProgress, ...]
    failed_step: str | None = None
    error: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    def step(self, name: str) -> StepProgress:
        for step in self.steps:
            if step.name == name:
                return step
        raise InvalidInputError(f"pipeline {self.name!r} has no step {name!r} (steps: "
                                f"{', '.join(s.name for s in self.steps)})")

    def outputs(self, step: str) -> dict[str, str]:
        """The output digests of ``step`` (empty until it succeeded or was reused)."""
        return dict(self.step(step).outputs)

    def reused(self) -> list[str]:
        """The steps whose earlier outputs were taken instead of running them."""
        return [s.name for s in self.steps if s.state == "reused"]

    def ran(self) -> list[str]:
        """The steps that ran in this pipeline run and succeeded."""
        return [s.name for s in self.steps if s.state == "succeeded"]

    def require(self) -> PipelineStatus:
        """This status when the run succeeded; else ``PipelineFailedError`` naming the step and its error."""
        if self.state == "succeeded":
            return self
        if self.state == "failed":
            raise PipelineFailedError(f"pipeline run {self.run_id} ({self.name}) failed at step {self.failed_step!r}: "
                                      f"{self.error}", self.run_id, self.failed_step, self.error)
        raise PipelineFailedError(f"pipeline run {self.run_id} ({self.name}) is {self.state}"
                                  + (f": {self.error}" if self.error else ""), self.run_id, None, self.error)


def _pipeline_run(store: Store, run_id: str) -> Run:
    from factory.runtime._scheduler import PIPELINE_KIND

    run = store.runs.get(run_id)
    if run.kind != PIPELINE_KIND:
        raise InvalidInputError(f"run {run_id} is a {run.kind} run, not a pipeline run: list pipeline runs with "
                                "'factory status'")
    return run


def pipeline_status(store: Store, run_id: str) -> PipelineStatus:
    """The run ``run_id`` as its events leave it."""
    run = _pipeline_run(store, run_id)
    events = run.events()
    names = [s["name"] for s in run.config.get("steps", ())]
    progress = replay(names, events)
    state = run.state
    failed_step = error = None
    for event in events:
        details = event.details or {}
        if details.get("event") == "failed":
            failed_step, error = details.get("step"), details.get("error")
        elif details.get("event") == "cancelled":
            error = details.get("reason")
    return PipelineStatus(run.id, run.name or run.config.get("name", ""), state, run.started_at.isoformat(),
                          tuple(progress[n] for n in names), failed_step, error)


def wait_pipeline(store: Store, run_id: str, *, timeout_s: float | None = None, poll_s: float = 0.25,
                  on_change: Callable[[PipelineStatus], None] | None = None) -> PipelineStatus:
    """Wait until ``run_id`` ends (``TimeoutError`` once ``timeout_s`` passed); ``on_change`` sees each new
    status. A run that reads ``interrupted`` is waited on: its controller's successor takes it over."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        status = pipeline_status(store, run_id)
        if on_change is not None and status != last:
            on_change(status)
        last = status
        if status.ended:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"pipeline run {run_id} is still {status.state} after {timeout_s:g} s")
        time.sleep(poll_s)


def pipeline_runs(store: Store, *, limit: int = 20) -> list[PipelineStatus]:
    """The latest pipeline runs, newest first."""
    from factory.runtime._scheduler import PIPELINE_KIND

    runs = store.runs.list(kind=PIPELINE_KIND)[-limit:]
    return [pipeline_status(store, r.id) for r in reversed(runs)]
