"""Promotion rules: what the controller does to bring a candidate into an environment, and who may ask.

- A candidate must be **admitted** to the environment (``factory.gates.admit``: every
  attestation the environment requires, verified against the log) before anything moves.
- The environment already serves it: nothing to do.
- Nothing serves the environment yet: the first version is **promoted directly** (there is
  no incumbent to compare against), by compare-and-swap from "unset" as the controller. A
  retried promotion that finds the ref already on the candidate is the same promotion, not
  a conflict.
- Otherwise the candidate is **rolled out** against what the environment serves now.
- Pipelines submitted by an experiment's actor (``experiment:...``) may not contain rollout
  steps: an experiment makes candidates; a team's pipeline promotes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from factory.errors import InvalidInputError, RefConflictError

if TYPE_CHECKING:
    from factory.runtime._plan import Plan
    from factory.serve import RolloutConfig, RolloutSpec
    from factory.store import RefChange, Store

__all__ = ["PromotionRules", "PromotionPlan", "EXPERIMENT_PREFIX"]

EXPERIMENT_PREFIX = "experiment:"


@dataclass(frozen=True)
class PromotionPlan:
    """What bringing ``candidate`` into ``env`` takes: ``serving`` (nothing), ``first`` or ``rollout``."""

    kind: Literal["serving", "first", "rollout"]
    model: str
    env: str
    candidate: str
    incumbent: str | None = None
    spec: RolloutSpec | None = None

    @property
    def env_ref(self) -> str:
        return f"model/{self.model}/{self.env}"


def _admit(store: Store, digest: str, env: str) -> Any:
    from factory.gates import admit

    return admit(store, digest, env)


class PromotionRules:
    """The rules above, over one store (acting as the controller). ``admit`` is injectable for tests."""

    def __init__(self, store: Store, *, admit: Callable[[Store, str, str], Any] = _admit):
        self.store = store
        self._admit = admit

    def check_submission(self, plan: Plan) -> None:
        """Refuse a plan its submitter may not run (rollout steps from an experiment)."""
        if plan.submitted_by.startswith(EXPERIMENT_PREFIX):
            rollouts = [s.name for s in plan.steps if s.type == "rollout"]
            if rollouts:
                raise InvalidInputError(
                    f"pipeline {plan.name!r} was submitted by {plan.submitted_by}, an experiment, and has rollout "
                    f"step(s) {', '.join(rollouts)}: experiments make candidates; promote one from a team pipeline "
                    "once its gates pass")

    def plan(self, candidate: str, env: str, config: RolloutConfig) -> PromotionPlan:
        """How ``candidate`` gets into ``env`` now; refused (``AdmissionDeniedError``) unless admitted there."""
        from factory.contract import open_package
        from factory.serve import RolloutSpec

        candidate = self.store.artifacts.resolve(candidate)
        contract = open_package(self.store, candidate).contract
        model = contract.name
        incumbent = self.store.refs.get(f"model/{model}/{env}")
        if incumbent == candidate:
            return PromotionPlan("serving", model, env, candidate, incumbent)
        self._admit(self.store, candidate, env).require()
        if incumbent is None:
            return PromotionPlan("first", model, env, candidate)
        bound = config.p99_latency_ms or contract.resources.p99_latency_ms
        spec = RolloutSpec(model=model, env=env, candidate=candidate, incumbent=incumbent, p99_bound_ms=bound,
                           config=config)
        return PromotionPlan("rollout", model, env, candidate, incumbent, spec)

    def promote_first(self, plan: PromotionPlan, *, reason: str) -> RefChange | None:
        """Point the environment's ref at the first version; None when it already points there."""
        try:
            return self.store.refs.set(plan.env_ref, plan.candidate, expected=None, reason=reason)
        except RefConflictError:
            if self.store.refs.get(plan.env_ref) == plan.candidate:
                return None  # this promotion, already made (a retried command)
            raise
