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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.errors import AdmissionDeniedError
from factory.gates.attestations import OVERRIDE_TYPE, Attestation
from factory.gates.policy import Verdict

__all__ = ["OVERRIDE_TYPE", "EnvironmentPolicy", "Requirement", "Admission", "decide", "DEFAULT_ENVIRONMENTS",
           "CONTRACT_TYPE", "policy_type"]

CONTRACT_TYPE = "https://factory.dev/contract-validation/v1"


def policy_type(policy_id: str, major: int = 1) -> str:
    """The predicate type of a built-in policy's attestations (a plugin may name its own)."""
    return f"https://factory.dev/attestations/policy/{policy_id}/v{major}"

class EnvironmentPolicy(BaseModel):
    """What an environment requires before it serves a package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    requires: tuple[str, ...] = Field(description="predicate type URIs that must each be met")
    trusted_keys: tuple[str, ...] | None = Field(None, description="key ids accepted; None: every trusted key")
    max_age: timedelta = Field(timedelta(days=30), gt=timedelta(0))
    accept_conditional: bool = False
    overridable: tuple[str, ...] | None = Field(
        None, description="required types a signed override may meet; None: any of them; (): none")

    @model_validator(mode="after")
    def _overridable_required(self) -> EnvironmentPolicy:
        stray = sorted(set(self.overridable or ()) - set(self.requires))
        if stray:
            raise ValueError(f"overridable names {stray[0]!r}, which {self.name} does not require: "
                             "list only required predicate types")
        return self

    def accepts_override(self, predicate_type: str) -> bool:
        return self.overridable is None or predicate_type in self.overridable


# The built-in gate sets (policy_sets.BUILTIN_SETS) produce what these require. In prod
# a person may accept a failed quality, fairness, drift or card result, never a package
# that breaks its contract or fails the security scan.
DEFAULT_ENVIRONMENTS = {
    "dev": EnvironmentPolicy(name="dev", requires=(CONTRACT_TYPE, policy_type("security"))),
    "staging": EnvironmentPolicy(name="staging", requires=(
        CONTRACT_TYPE, policy_type("security"), policy_type("model-card"), policy_type("quality"))),
    "prod": EnvironmentPolicy(
        name="prod", max_age=timedelta(days=7),
        requires=(CONTRACT_TYPE, policy_type("security"), policy_type("model-card"), policy_type("quality"),
                  policy_type("fairness"), policy_type("drift")),
        overridable=(policy_type("model-card"), policy_type("quality"), policy_type("fairness"),
                     policy_type("drift"))),
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
    """The decision for one package in one environment: ``allowed``, and else what is ``missing``."""

    environment: str
    package: str
    requirements: tuple[Requirement, ...]

    @property
    def allowed(self) -> bool:
        return bool(self.requirements) and all(r.met for r in self.requirements)

    @property
    def missing(self) -> list[Requirement]:
        """Each requirement not met: its predicate type and, in words, why."""
        return [r for r in self.requirements if not r.met]

    @property
    def counted(self) -> list[Attestation]:
        """The attestations (overrides included) that met a requirement."""
        return [r.attestation for r in self.requirements if r.met and r.attestation is not None]

    @property
    def overrides(self) -> list[Requirement]:
        """The requirements met by a person's override rather than a passing result."""
        return [r for r in self.requirements if r.overridden]

    def explain(self) -> str:
        if self.allowed:
            shown = "; ".join(f"{r.predicate_type}: {r.reason}" for r in self.overrides)
            return f"{self.package} is admitted to {self.environment}" + (f" (with overrides: {shown})" if shown
                                                                          else "")
        if not self.requirements:
            return f"{self.package} is refused by {self.environment}: the environment requires nothing, so it " \
                   "admits nothing (default deny); give it requirements"
        return f"{self.package} is refused by {self.environment}: " + "; ".join(
            f"{r.predicate_type}: {r.reason}" for r in self.missing)

    def require(self) -> Admission:
        """``self`` if allowed, else raise ``AdmissionDeniedError`` saying what is missing."""
        if not self.allowed:
            raise AdmissionDeniedError(self.explain(), self.package, self.environment,
                                       tuple(r.predicate_type for r in self.missing))
        return self


def _usable(env: EnvironmentPolicy, att: Attestation, now: datetime) -> str | None:
    if env.trusted_keys is not None and att.key.keyid not in env.trusted_keys:
        return f"signed by key {att.key.keyid[:16]}, which {env.name} does not trust"
    if att.evaluated_at is None:
        return "carries no evaluation time"
    if now - att.evaluated_at > env.max_age:
        return f"is from {att.evaluated_at:%Y-%m-%d %H:%M}, older than {env.name}'s limit of {env.max_age}"
    return None


def decide(env: EnvironmentPolicy, package: str, attestations: Iterable[Attestation], *, now: datetime,
           rejected: Mapping[str, str] | None = None) -> Admission:
    """Admit ``package`` to ``env`` only if every required predicate type is met (default deny).

    ``rejected`` maps a predicate type to why an attestation of that type did not
    verify, so a refusal says so rather than "no attestation".
    """
    about = sorted((a for a in attestations if a.subject_digest == package),
                   key=lambda a: a.evaluated_at or datetime.min.replace(tzinfo=now.tzinfo))
    requirements = []
    for wanted in env.requires:
        results = [a for a in about if a.predicate_type == wanted]
        overrides = [a for a in about if a.predicate_type == OVERRIDE_TYPE
                     and a.predicate.get("overrides") == wanted and _usable(env, a, now) is None]
        latest = results[-1] if results else None
        newer = [o for o in overrides if latest is None or latest.evaluated_at is None
                 or o.evaluated_at >= latest.evaluated_at]
        if newer and env.accepts_override(wanted):
            o = newer[-1]
            requirements.append(Requirement(wanted, True, f"overridden by {o.predicate.get('actor', '?')}: "
                                                          f"{o.predicate.get('reason', '')}", o, overridden=True))
            continue
        if latest is None:
            why = (rejected or {}).get(wanted)
            requirements.append(Requirement(wanted, False, f"no attestation that verifies ({why})" if why
                                            else "no attestation"))
            continue
        problem = _usable(env, latest, now)
        accepted = {Verdict.PASS} | ({Verdict.CONDITIONAL} if env.accept_conditional else set())
        if problem is None and latest.verdict not in accepted:
            problem = f"the latest result is {latest.verdict}: {latest.predicate.get('reason', '')}"
            if newer:
                problem += f" (an override by {newer[-1].predicate.get('actor', '?')} exists, but {env.name} " \
                           "accepts no override for this type)"
        requirements.append(Requirement(wanted, problem is None, problem or "met", latest))
    return Admission(env.name, package, tuple(requirements))
