"""What a pipeline run's events say about its steps: one pure replay, used by the scheduler
when it takes a run over and by ``factory status``.

The pipeline run records one event per step transition (``details["event"]``):
``step-started`` (step, run, attempt), ``step-retrying`` (attempt, error, delay_s),
``step-succeeded`` (run, outputs, duration_s), ``reused`` (the earlier run and its outputs),
``step-waiting`` (another process runs the same key), ``step-failed`` (error, attempts),
``step-skipped`` (reason) and ``step-cancelled``; then the run ends ``succeeded``, ``failed``
(step, error) or ``cancelled`` (by, reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

__all__ = ["StepProgress", "replay", "STEP_EVENTS", "DONE", "ENDED"]

STEP_EVENTS = frozenset({"step-started", "step-retrying", "step-succeeded", "reused", "step-waiting", "step-failed",
                         "step-skipped", "step-cancelled"})
DONE = frozenset({"succeeded", "reused"})
ENDED = DONE | {"failed", "skipped", "cancelled"}


@dataclass(frozen=True)
class StepProgress:
    """One step as the pipeline run's events leave it."""

    name: str
    state: str = "pending"  # pending, running, retrying, waiting, succeeded, reused, failed, skipped, cancelled
    run: str | None = None
    attempt: int = 0
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None

    @property
    def done(self) -> bool:
        return self.state in DONE

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def elapsed_s(self, now: datetime) -> float | None:
        """Seconds it ran (so far, while it runs)."""
        if self.duration_s is not None:
            return self.duration_s
        if self.started_at is None:
            return None
        end = datetime.fromisoformat(self.ended_at) if self.ended_at else now
        return max(0.0, (end - datetime.fromisoformat(self.started_at)).total_seconds())


def replay(steps: Iterable[str], events: Iterable[Any]) -> dict[str, StepProgress]:
    """Each step's progress from the pipeline run's events (objects with ``details`` and ``at``)."""
    progress = {name: StepProgress(name) for name in steps}
    for event in events:
        details = event.details or {}
        kind, name = details.get("event"), details.get("step")
        if kind not in STEP_EVENTS or name not in progress:
            continue
        current = progress[name]
        at = event.at
        if kind == "step-started":
            current = replace(current, state="running", run=details.get("run"), attempt=int(details.get("attempt", 1)),
                              started_at=current.started_at or at, error=None)
        elif kind == "step-retrying":
            current = replace(current, state="retrying", error=details.get("error"))
        elif kind == "step-waiting":
            current = replace(current, state="waiting", run=details.get("run"))
        elif kind in ("step-succeeded", "reused"):
            current = replace(current, state="succeeded" if kind == "step-succeeded" else "reused",
                              run=details.get("run"), outputs=dict(details.get("outputs") or {}), ended_at=at,
                              duration_s=details.get("duration_s", 0.0 if kind == "reused" else None))
        elif kind == "step-failed":
            current = replace(current, state="failed", error=details.get("error"), ended_at=at)
        elif kind == "step-skipped":
            current = replace(current, state="skipped", error=details.get("reason"))
        elif kind == "step-cancelled":
            current = replace(current, state="cancelled", ended_at=at)
        progress[name] = current
    return progress
