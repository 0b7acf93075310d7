"""Admission per environment: does a package hold every attestation its environment requires?

An ``EnvironmentPolicy`` (dev, staging, prod, or any configured one) names the
predicate types it requires, the keys it trusts and how fresh an attestation must be.
``decide`` is the pure rule, given verified, logged attestations about the package and
the time: for each required predicate type the newest attestation counts; it must
PASS (or be CONDITIONAL where the environment accepts that), be signed by a key the
environment trusts, and be no older than ``max_age``. A signed override for that
predicate type, newer than the result it overrides, counts as met and is named in the
decision. Anything else is missing, with the reason; the default is deny.

The store-facing part (environment policies as ``environment-policy`` artifacts behind
``policy/env/<env>`` refs, attestations read from the log) lives with the gate runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from factory.gates.attestations import OVERRIDE_TYPE, Attestation
from factory.gates.policy import Verdict

__all__ = ["OVERRIDE_TYPE", "EnvironmentPolicy", "Requirement", "Admission", "decide", "DEFAULT_ENVIRONMENTS"]

def _policy_type(policy_id: str) -> str:
    return f"https://factory.dev/attestations/policy/{policy_id}/v1"


class EnvironmentPolicy(BaseModel):
    """What an environment requires before it serves a package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    requires: tuple[str, ...] = Field(description="predicate type URIs that must each be met")
    trusted_keys: tuple[str, ...] | None = Field(None, description="key ids accepted; None: every trusted key")
    max_age: timedelta = Field(timedelta(days=30), gt=timedelta(0))
    accept_conditional: bool = False


DEFAULT_ENVIRONMENTS = {
    "dev": EnvironmentPolicy(name="dev", requires=("https://factory.dev/contract-validation/v1",)),
    "staging": EnvironmentPolicy(name="staging", requires=(
        "https://factory.dev/contract-validation/v1", _policy_type("security"), _policy_type("quality"))),
    "prod": EnvironmentPolicy(name="prod", max_age=timedelta(days=7), requires=(
        "https://factory.dev/contract-validation/v1", _policy_type("security"), _policy_type("quality"),
        _policy_type("fairness"), _policy_type("drift"), _policy_type("model-card"))),
}


@dataclass(frozen=True)
class Requirement:
    """One required predicate type: met or not, and why."""

    predicate_type: str
    met: bool
    reason: str
    attestation: Attestation | None = None
    overridden: bool = False


@dataclass(frozen=True)
class Admission:
    """The decision for one package in one environment."""

    environment: str
    package: str
    requirements: tuple[Requirement, ...]

    @property
    def allowed(self) -> bool:
        return bool(self.requirements) and all(r.met for r in self.requirements)

    @property
    def missing(self) -> list[Requirement]:
        return [r for r in self.requirements if not r.met]

    def explain(self) -> str:
        if self.allowed:
            return f"{self.package} is admitted to {self.environment}"
        return f"{self.package} is refused by {self.environment}: " + "; ".join(
            f"{r.predicate_type}: {r.reason}" for r in self.missing)


def _usable(env: EnvironmentPolicy, att: Attestation, now: datetime) -> str | None:
    if env.trusted_keys is not None and att.key.keyid not in env.trusted_keys:
        return f"signed by key {att.key.keyid[:16]}, which {env.name} does not trust"
    if att.evaluated_at is None:
        return "carries no evaluation time"
    if now - att.evaluated_at > env.max_age:
        return f"is from {att.evaluated_at:%Y-%m-%d %H:%M}, older than {env.name}'s limit of {env.max_age}"
    return None


def decide(env: EnvironmentPolicy, package: str, attestations: Iterable[Attestation], *, now: datetime) -> Admission:
    """Admit ``package`` to ``env`` only if every required predicate type is met (default deny)."""
    about = sorted((a for a in attestations if a.subject_digest == package),
                   key=lambda a: a.evaluated_at or datetime.min.replace(tzinfo=now.tzinfo))
    requirements = []
    for wanted in env.requires:
        results = [a for a in about if a.predicate_type == wanted]
        overrides = [a for a in about if a.predicate_type == OVERRIDE_TYPE
                     and a.predicate.get("overrides") == wanted and _usable(env, a, now) is None]
        latest = results[-1] if results else None
        if overrides and (latest is None or latest.evaluated_at is None
                          or overrides[-1].evaluated_at >= latest.evaluated_at):
            o = overrides[-1]
            requirements.append(Requirement(wanted, True, f"overridden by {o.predicate.get('actor', '?')}: "
                                                          f"{o.predicate.get('reason', '')}", o, overridden=True))
            continue
        if latest is None:
            requirements.append(Requirement(wanted, False, "no attestation"))
            continue
        problem = _usable(env, latest, now)
        accepted = {Verdict.PASS} | ({Verdict.CONDITIONAL} if env.accept_conditional else set())
        if problem is None and latest.verdict not in accepted:
            problem = f"the latest result is {latest.verdict}: {latest.predicate.get('reason', '')}"
        requirements.append(Requirement(wanted, problem is None, problem or "met", latest))
    return Admission(env.name, package, tuple(requirements))
