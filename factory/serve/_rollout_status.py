"""A rollout as an operator sees it, read from its run alone (no host needed).

``rollout_status(run, now)`` folds the run's events and its live figures (the host logs
them as run metrics at every tick) into a ``RolloutStatus``: the versions with their
weights, request counts, error rates and p99, the stage, the time left in its window,
and whether it is paused, blocked, or ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from factory.serve._rollout_config import RolloutSpec
from factory.serve._rollout_state import RolloutState, replay

if TYPE_CHECKING:
    from factory.store import Run, Store

__all__ = ["RolloutStatus", "VersionRow", "rollout_status", "rollouts", "find_rollout"]

_ENDED_RUN = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class VersionRow:
    role: str
    version: str
    digest: str
    weight: float
    requests: float | None
    error_rate: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class RolloutStatus:
    run_id: str
    run_state: str
    spec: RolloutSpec
    state: RolloutState
    stage_name: str
    time_left_s: float | None
    rows: tuple[VersionRow, ...]

    @property
    def headline(self) -> str:
        """One line: where the rollout is and what it waits for."""
        s = self.state
        if s.ended:
            return f"{s.outcome}: {s.note}"
        if self.run_state == "interrupted":
            where = f"{self.stage_name}, no host running it (interrupted): resume it to go on"
        elif s.blocked:
            where = f"{self.stage_name}, paused itself: {s.blocked}"
        elif s.paused:
            where = f"{self.stage_name}, {s.note}"
        else:
            where = self.stage_name
        return where


def _stage_name(spec: RolloutSpec, state: RolloutState) -> str:
    stages = spec.config.stages()
    if state.ended:
        return str(state.outcome)
    if state.holding:
        return "holding at " + ("no stage passed" if state.passed < 0 else _name(spec, state.passed, stages))
    return _name(spec, state.stage, stages)


def _name(spec: RolloutSpec, stage: int, stages: tuple[float, ...]) -> str:
    if spec.config.is_shadow(stage):
        return f"shadow ({spec.config.shadow_percent:g} % of requests copied)"
    steps = len(spec.config.steps)
    return f"canary step {stage - (len(stages) - steps) + 1} of {steps} ({stages[stage]:g} %)"


def rollout_status(run: Run, now: float) -> RolloutStatus:
    spec = RolloutSpec.model_validate(run.config)
    state = replay(e.details for e in run.events())
    latest: dict[str, float] = {}
    for point in run.metrics():
        if point.step == max(state.stage, 0):
            latest[point.name] = point.value
    weights = {spec.candidate_version: state.weight, spec.incumbent_version: 100.0 - state.weight}
    if state.outcome == "promoted":
        weights = {spec.candidate_version: 100.0, spec.incumbent_version: 0.0}
    elif state.outcome == "rolled-back":
        weights = {spec.candidate_version: 0.0, spec.incumbent_version: 100.0}
    rows = tuple(
        VersionRow(role, version, digest, weights[version], latest.get(f"{role}.requests"),
                   latest.get(f"{role}.error_rate"), latest.get(f"{role}.p99_ms"))
        for role, version, digest in (("incumbent", spec.incumbent_version, spec.incumbent),
                                      ("candidate", spec.candidate_version, spec.candidate)))
    left = None
    if not state.ended and not state.holding and not state.paused and run.state != "interrupted":
        left = max(0.0, spec.config.window_s - (now - state.stage_started_at))
    return RolloutStatus(run.id, run.state, spec, state, _stage_name(spec, state), left, rows)


def rollouts(store: Store, *, model: str | None = None, env: str | None = None, live: bool = False) -> list[Run]:
    """Rollout runs, oldest first, of ``model`` in ``env`` when given; ``live``: those not ended."""
    out = []
    for run in store.runs.list(kind="rollout"):
        if live and run.state in _ENDED_RUN:
            continue
        config = run.config
        if (model is None or config.get("model") == model) and (env is None or config.get("env") == env):
            out.append(run)
    return out


def find_rollout(store: Store, run_id: str | None = None, *, model: str | None = None, env: str | None = None,
                 candidate: str | None = None, live: bool = False) -> Run:
    """The rollout named by ``run_id``, else the latest matching one; an error says how to pick when unclear."""
    from factory.errors import InvalidInputError, NotFoundError

    if run_id is not None:
        run = store.runs.get(run_id)
        if run.kind != "rollout":
            raise InvalidInputError(f"run {run_id} is a {run.kind} run, not a rollout: see 'factory runs list "
                                    "--kind rollout'")
        return run
    found = rollouts(store, model=model, env=env, live=live)
    if candidate is not None:
        found = [r for r in found if r.config.get("candidate") == candidate]
    if not found:
        what = "live rollout" if live else "rollout"
        raise NotFoundError(f"no {what} found{' of ' + candidate if candidate else ''}: start one with "
                            "'factory rollout start DIGEST'")
    if live and len({(r.config.get("model"), r.config.get("env")) for r in found}) > 1:
        names = ", ".join(f"{r.id} ({r.name})" for r in found)
        raise InvalidInputError(f"several rollouts are live ({names}): pick one with --run ID")
    return found[-1]
