"""What a rollout does and what it judges by: ``RolloutConfig`` (written by users) and ``RolloutSpec``.

``RolloutConfig`` holds the steps (percent of traffic on the candidate), the analysis
window and minimum request count, and the thresholds of every check. ``RolloutSpec``
is a rollout's run config: the config plus what it is about (model, environment,
candidate, incumbent) and the resolved p99 bound; a rollout is rebuilt from it and
its run's events.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from factory.errors import InvalidInputError
from factory.serve._router import StickyKey
from factory.serve._traffic import version_of
from factory.store import check_digest

__all__ = ["RolloutConfig", "RolloutSpec", "parse_duration", "parse_steps"]

Digest = Annotated[str, AfterValidator(check_digest)]
_ENV = re.compile(r"[a-z][a-z0-9-]{0,63}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class RolloutConfig(BaseModel):
    """How a candidate goes from shadow to promoted. Every figure is configuration.

    Steps: ``steps`` are the candidate's share of traffic in percent, strictly increasing
    and ending at 100; with ``shadow`` a shadow stage comes first (weight 0,
    ``shadow_percent`` of requests copied to the candidate). During canary steps
    ``canary_shadow_percent`` of the incumbent's requests are still copied, so divergence
    keeps being measured.

    Analysis: each stage is judged over its own window, at least ``window_s`` long, once
    the candidate answered ``min_requests``. A failing check rolls back as soon as it is
    seen with that many requests; passing needs the whole window. A stage still short of
    requests after ``max_stage_s`` (default 10 windows) pauses the rollout.

    Error rate: the candidate fails above ``max_error_ratio`` times the incumbent's rate,
    but never below ``error_rate_floor`` (so 0 against 0.1 % is no failure), and only when
    the excess is significant: the chance of seeing that many errors at the allowed rate
    (binomial) is below ``1 - error_confidence``. Latency: the candidate's p99 must stay at
    or under ``p99_latency_ms`` (default: the candidate's contract bound). Divergence: per
    label output, the share of rows that disagree with the incumbent stays at or under
    ``max_disagreement``; per numeric output, the mean absolute difference at or under
    ``max_mean_abs_diff`` when set; judged from ``min_compared`` comparisons (required in
    the shadow stage). Business: with ``min_outcomes`` reported outcomes per version, the
    candidate's accuracy may trail the incumbent's by at most ``max_accuracy_drop`` and its
    mean absolute error exceed it by at most ``max_error_increase`` (relative).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    shadow: bool = True
    shadow_percent: float = Field(100.0, gt=0, le=100)
    canary_shadow_percent: float = Field(20.0, ge=0, le=100)
    window_s: float = Field(60.0, gt=0, le=7 * 86400)
    min_requests: int = Field(100, ge=1)
    max_stage_s: float | None = Field(None, gt=0)
    max_error_ratio: float = Field(2.0, ge=1.0)
    error_rate_floor: float = Field(0.01, ge=0.0, le=1.0)
    error_confidence: float = Field(0.99, gt=0.5, lt=1.0)
    p99_latency_ms: float | None = Field(None, gt=0)
    max_disagreement: float = Field(0.1, ge=0.0, le=1.0)
    max_mean_abs_diff: float | None = Field(None, ge=0.0)
    min_compared: int = Field(50, ge=1)
    min_outcomes: int = Field(30, ge=1)
    max_accuracy_drop: float = Field(0.02, ge=0.0, le=1.0)
    max_error_increase: float = Field(0.1, ge=0.0)
    sticky: StickyKey | None = None

    @model_validator(mode="after")
    def _steps(self) -> RolloutConfig:
        steps = self.steps
        if not steps or any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"steps {list(steps)} must be percentages above 0 and at most 100, e.g. 5,25,50,100")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps {list(steps)} must grow strictly, e.g. 5,25,50,100")
        if steps[-1] != 100:
            raise ValueError(f"steps {list(steps)} must end at 100, where the candidate takes all traffic")
        if self.max_stage_s is not None and self.max_stage_s < self.window_s:
            raise ValueError(f"max_stage_s ({self.max_stage_s}) must be at least window_s ({self.window_s})")
        return self

    @property
    def stage_limit_s(self) -> float:
        return self.max_stage_s if self.max_stage_s is not None else 10 * self.window_s

    def stages(self) -> tuple[float, ...]:
        """The candidate's weight at each stage: 0 for the shadow stage, then each step."""
        return ((0.0,) if self.shadow else ()) + tuple(float(s) for s in self.steps)

    def is_shadow(self, stage: int) -> bool:
        return self.shadow and stage == 0


class RolloutSpec(BaseModel):
    """One rollout: its config, the model and environment, the two packages and the p99 bound in force."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = "factory.rollout/v1"
    model: str = Field(min_length=1, max_length=128)
    env: str = Field(min_length=1, max_length=64)
    candidate: Digest
    incumbent: Digest
    p99_bound_ms: float = Field(gt=0, allow_inf_nan=False)
    config: RolloutConfig = RolloutConfig()

    @model_validator(mode="after")
    def _names(self) -> RolloutSpec:
        if not _MODEL.fullmatch(self.model):
            raise ValueError(f"{self.model!r} is not a model name: use letters, digits, '.', '_' and '-'")
        if not _ENV.fullmatch(self.env):
            raise ValueError(f"{self.env!r} is not an environment: use lowercase letters, digits and '-' (e.g. prod)")
        if version_of(self.candidate) == version_of(self.incumbent):
            raise ValueError(f"the candidate {self.candidate} is already the incumbent of model/{self.model}/"
                             f"{self.env}: there is nothing to roll out")
        return self

    @property
    def env_ref(self) -> str:
        return f"model/{self.model}/{self.env}"

    @property
    def candidate_version(self) -> str:
        return version_of(self.candidate)

    @property
    def incumbent_version(self) -> str:
        return version_of(self.incumbent)

    @property
    def key(self) -> str:
        """The run key: one rollout of this candidate against this incumbent in this environment."""
        return f"rollout:{self.model}:{self.env}:{self.candidate}:{self.incumbent}"


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``10s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds."""
    match = _DURATION.fullmatch(text or "")
    if match is None or float(match[1]) <= 0:
        raise InvalidInputError(f"{what} {text!r} is not a duration: write e.g. 10s, 500ms, 2m or 1h")
    return float(match[1]) * _UNITS[match[2]]


def parse_steps(text: str) -> tuple[float, ...]:
    """Canary steps written ``5,25,50,100`` (percent)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InvalidInputError(f"steps {text!r} are not percentages: write them like 5,25,50,100") from None
