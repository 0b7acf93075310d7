"""The policy plugin interface: what a gate policy is, what it returns, how it is found.

A policy is any object with an ``id`` (str), a ``version`` (str) and
``evaluate(package, context) -> PolicyResult``. ``package`` is a
``factory.contract.PackageView`` (contract, card, metrics, architecture, files, weights
on demand); ``context`` gives the store, the clock and a place to keep evidence. A
policy may also set ``predicate_type``, the in-toto predicate type URI of its
attestations (by default ``https://factory.dev/attestations/policy/<id>/v<major>``), and
``remediation``, a sentence telling the package's owner how to fix a failure; it goes
into the remediation ticket a failing gate opens.

Policies are classes registered in the entry-point group ``factory.policies`` (the
built-ins are registered the same way, in factory's own pyproject). A class is built
with the keyword configuration of the policy set that names it, so a team adds a rule
by shipping a distribution with one entry point, without touching factory::

    [project.entry-points."factory.policies"]
    max-parameters = "my_rules:MaxParametersPolicy"
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from factory.errors import InvalidInputError, NotFoundError
from factory.store import canonical_json, register_kind

if TYPE_CHECKING:
    from factory.contract import PackageView
    from factory.store import Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "Verdict",
    "PolicyResult",
    "PolicyContext",
    "Policy",
    "PolicyRegistry",
    "default_policies",
    "predicate_type_of",
    "remediation_of",
    "EVIDENCE_KIND",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "factory.policies"
EVIDENCE_KIND = register_kind("evidence", "what a gate policy measured or used, kept for its attestation")
Figure = float | int | str | bool | None


class Verdict(enum.StrEnum):
    """PASS: the package meets the rule. FAIL: it does not. CONDITIONAL: it may, with the stated condition."""

    PASS = "pass"
    FAIL = "fail"
    CONDITIONAL = "conditional"


def _figure(name: object, value: object) -> Figure:
    """A figure as a plain JSON value (numpy scalars unwrapped), so it can be signed."""
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise InvalidInputError(f"figure {name!r} is a {type(value).__name__}: figures are numbers, strings, "
                                "booleans or None")
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinity have no JSON form; None says the figure could not be computed
    return value


@dataclass(frozen=True)
class PolicyResult:
    """What a policy found: a verdict, why, the figures it measured and the evidence it used, by digest."""

    policy: str
    version: str
    verdict: Verdict
    reason: str = ""
    figures: Mapping[str, Figure] = field(default_factory=dict)
    evidence: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        object.__setattr__(self, "figures", {str(k): _figure(k, v) for k, v in self.figures.items()})
        object.__setattr__(self, "evidence", dict(self.evidence))

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "version": self.version, "verdict": str(self.verdict), "reason": self.reason,
                "figures": dict(self.figures), "evidence": dict(self.evidence)}

    @classmethod
    def fail(cls, policy: Policy, reason: str, **kwargs: Any) -> PolicyResult:
        return cls(policy.id, policy.version, Verdict.FAIL, reason, **kwargs)


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may use besides the package: the store, the clock, and an evidence locker.

    ``subject`` is the digest of the package being judged (``evaluate`` sets it): the
    evidence a policy keeps is recorded as an ``evidence`` artifact whose parent is the
    package, so lineage shows what each finding was measured on.
    """

    store: Store
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    subject: str | None = None

    def evidence(self, value: bytes | Mapping[str, Any] | list, *, name: str | None = None) -> str:
        """Keep evidence (bytes, or JSON written canonically) in the store; returns its digest."""
        data = value if isinstance(value, bytes) else canonical_json(value)
        digest = self.store.blobs.put_bytes(data)
        parents = [self.subject] if self.subject else []
        self.store.artifacts.add(EVIDENCE_KIND, digest=digest, name=name, parents=parents,
                                 metadata={"size": len(data), "subject": self.subject,
                                           "format": "bytes" if isinstance(value, bytes) else "json"})
        return digest


@runtime_checkable
class Policy(Protocol):
    """A gate policy. Implement these three members; ``predicate_type`` and ``remediation`` are optional."""

    id: str
    version: str

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult: ...


def predicate_type_of(policy: Policy) -> str:
    """The predicate type URI of a policy's attestations."""
    explicit = getattr(policy, "predicate_type", None)
    if explicit:
        return str(explicit)
    major = str(policy.version).split(".", 1)[0] or "0"
    return f"https://factory.dev/attestations/policy/{policy.id}/v{major}"


def remediation_of(policy: object) -> str:
    """How to fix a failure of ``policy``, in words: its ``remediation`` if it has one."""
    text = getattr(policy, "remediation", None)
    if isinstance(text, str) and text.strip():
        return text.strip()
    return ("fix what the policy reports, package the model again and run the gate again; if the risk is "
            "accepted, a person may override it with 'factory gates override'")


class PolicyRegistry:
    """Policy classes by id, from the ``factory.policies`` entry points (or registered by hand)."""

    def __init__(self, classes: Mapping[str, Callable[..., Policy]] | None = None):
        self._by_id: dict[str, Callable[..., Policy]] = dict(classes or {})
        self._broken: dict[str, str] = {}

    @classmethod
    def discover(cls, group: str = ENTRY_POINT_GROUP) -> PolicyRegistry:
        """Every policy that installed distributions (and factory itself) declare.

        A plugin that fails to import is logged and remembered, not fatal: asking for it
        later raises with the original problem.
        """
        registry = cls()
        for ep in importlib.metadata.entry_points(group=group):
            try:
                registry.register(ep.name, ep.load())
            except Exception as exc:  # a plugin may fail in any way; keep the others usable
                problem = f"entry point {ep.value!r} failed to load ({type(exc).__name__}: {exc})"
                log.warning("policy %r: %s", ep.name, problem)
                registry._broken.setdefault(ep.name, problem)
        return registry

    def register(self, policy_id: str, factory: Callable[..., Policy]) -> None:
        declared = getattr(factory, "id", policy_id)
        if declared != policy_id:
            raise InvalidInputError(f"policy {policy_id!r} is registered under its entry-point name but declares "
                                    f"id {declared!r}: make the two agree")
        if policy_id in self._by_id and self._by_id[policy_id] is not factory:
            raise InvalidInputError(f"policy {policy_id!r} is declared twice: uninstall one of the distributions")
        self._by_id[policy_id] = factory

    def create(self, policy_id: str, **config: Any) -> Policy:
        """A policy instance built with its configuration; the error names what is wrong and how to fix it."""
        factory = self._by_id.get(policy_id)
        if factory is None:
            if policy_id in self._broken:
                raise NotFoundError(f"policy {policy_id!r} is unavailable: {self._broken[policy_id]}; fix or "
                                    "reinstall the plugin")
            raise NotFoundError(f"no policy {policy_id!r}: choose among {self.ids()} or install the distribution "
                                f"that declares it in the {ENTRY_POINT_GROUP!r} entry-point group")
        try:
            policy = factory(**config)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"policy {policy_id!r} does not accept configuration {config!r}: {exc}") from None
        if not isinstance(policy, Policy):
            raise InvalidInputError(f"{policy_id!r} built a {type(policy).__name__}, which lacks id, version or "
                                    "evaluate(package, context): see the Policy protocol in factory.gates")
        return policy

    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def __contains__(self, policy_id: object) -> bool:
        return policy_id in self._by_id

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())


@functools.cache
def default_policies() -> PolicyRegistry:
    """The process-wide registry of installed policies, discovered once."""
    return PolicyRegistry.discover()
