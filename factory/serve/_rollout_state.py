"""A rollout's state, folded from its run's events: nothing else is needed to rebuild it.

Every transition of a rollout is one event on its run (``details["event"]``), written
before the change it announces takes effect. ``replay(events)`` folds them into a
``RolloutState``; a host that died mid-stage is replaced by one that replays the same
events and carries on. Stages are numbered as ``RolloutConfig.stages()`` lists them (the
shadow stage first when there is one); ``stage == passed`` means holding at the last
passed stage, about to enter the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["RolloutState", "replay", "advance", "ENDED", "EVENTS"]

ENDED = ("promoted", "rolled-back")
EVENTS = ("started", "stage", "passed", "recovered", "paused", "resumed", "blocked", "refused", "ignored", *ENDED)


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands.

    ``stage``: the stage being analysed (``== passed`` when holding); ``passed``: the last
    stage that passed (-1 for none); ``weight``: the candidate's weight in the last traffic
    applied, and ``generation`` that config's generation; ``paused`` with ``note`` saying
    who and why; ``blocked``: why the rollout paused itself (promotion refused, too little
    traffic); ``outcome``: promoted or rolled-back once ended; ``commands``: the
    queue position of the last operator command applied; ``last``: the last recorded
    analysis (JSON).
    """

    stage: int = 0
    passed: int = -1
    started_at: float = 0.0
    stage_started_at: float = 0.0
    weight: float = 0.0
    generation: int = 0
    paused: bool = False
    blocked: str | None = None
    note: str = ""
    outcome: str | None = None
    commands: int = 0
    last: Mapping[str, Any] | None = None

    @property
    def holding(self) -> bool:
        return self.stage == self.passed

    @property
    def ended(self) -> bool:
        return self.outcome is not None


def advance(state: RolloutState, d: Mapping[str, Any]) -> RolloutState:
    """The state after one more event (its details)."""
    event = d.get("event")
    t = float(d.get("t", 0.0))
    s = state
    if "traffic" in d:
        s = replace(s, generation=max(s.generation, int(d["traffic"]["generation"])), weight=float(d["weight"]))
    if "command" in d:
        s = replace(s, commands=max(s.commands, int(d["command"])))
    who = f"{d.get('by', '?')}: {d.get('reason', '')}"
    if event == "started":
        return replace(s, stage=0, passed=-1, started_at=t, stage_started_at=t)
    if event == "stage":
        return replace(s, stage=int(d["stage"]), stage_started_at=t)
    if event == "passed":
        return replace(s, passed=int(d["stage"]), stage=int(d["stage"]), last=d.get("analysis"))
    if event == "recovered":
        return replace(s, stage=s.passed, stage_started_at=t)
    if event == "paused":
        return replace(s, paused=True, note=f"paused by {who}")
    if event == "resumed":
        return replace(s, paused=False, blocked=None, note=f"resumed by {who}")
    if event == "blocked":
        return replace(s, paused=True, blocked=str(d.get("reason", "")), note=f"paused itself: {d.get('reason', '')}")
    if event == "ignored":
        return replace(s, note=f"{d.get('action', '?')} by {d.get('by', '?')} not applied: {d.get('error', '')}")
    if event == "refused":
        return replace(s, note=f"promotion by {d.get('by', '?')} refused: {d.get('error', '')}")
    if event in ENDED:
        return replace(s, outcome=event, note=f"{event} by {who}", last=d.get("analysis", s.last))
    return s  # an event this version does not know: kept on the run, skipped here


def replay(events: Iterable[Mapping[str, Any]]) -> RolloutState:
    """The state after ``events`` (each a run event's details), oldest first."""
    state = RolloutState()
    for details in events:
        state = advance(state, details)
    return state
