"""Gate runs: evaluate a candidate against a policy set, sign every result, log them, open tickets.

A gate run is a store run (``store.runs``, kind ``gate``) whose parent is the package and
whose config is the policy set. Its idempotency key is the package, the set and the
code that judges it, so asking again returns the recorded run and its results
(``reused``) rather than judging twice; ``rerun=True`` judges again (attestations age
out of an environment's freshness window). The steps:

1. evaluate every policy: as parallel Ray tasks when this process is connected to a
   Ray cluster, in this process otherwise;
2. sign each result as an in-toto attestation with this store's actor and the
   ``attestation`` key;
3. append all the envelopes to the transparency log in one batch (one checkpoint);
4. record each as an ``attestation`` artifact (findable by subject, policy, verdict,
   log index) and as an output of the run;
5. open a remediation ticket for each failure, close the tickets of policies that now pass;
6. record the outcome and whether this was the candidate's first gate run, which
   ``promotion_friction`` turns into the share of candidates failing their first one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from factory._version import code_version
from factory.errors import InvalidInputError
from factory.gates.attestations import predicate_result, read_statement
from factory.gates.evaluation import evaluate, sign_results
from factory.gates.ledger import attestation_log, attestation_signer, record_attestations
from factory.gates.policy import PolicyContext, PolicyRegistry, PolicyResult, default_policies, predicate_type_of, \
    remediation_of
from factory.gates.policy_sets import GateInputs, PolicySet, policy_set
from factory.gates.tickets import close_ticket, list_tickets, open_ticket, ticket_id
from factory.store import ArtifactKind, canonical_json, is_digest

if TYPE_CHECKING:
    from factory.gates.keys import KeyRing
    from factory.gates.policy import Policy
    from factory.store import Run, Store

__all__ = ["GATE_RUN_KIND", "GateOutcome", "GateRun", "run_gate", "gate_run", "resolve_candidate", "Friction",
           "promotion_friction"]

log = logging.getLogger(__name__)

GATE_RUN_KIND = "gate"


@dataclass(frozen=True)
class GateOutcome:
    """One policy's recorded result: the verdict and figures, and where its attestation is."""

    policy: str
    predicate_type: str
    result: PolicyResult
    attestation: str
    index: int
    ticket: str | None = None

    @property
    def passed(self) -> bool:
        return self.result.passed


@dataclass(frozen=True)
class GateRun:
    """A gate run and its outcomes, in the order of the policy set."""

    run: Run
    subject: str
    subject_name: str
    set_name: str
    outcomes: tuple[GateOutcome, ...]
    first: bool
    reused: bool = False

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failed(self) -> list[GateOutcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def tickets(self) -> list[str]:
        return [o.ticket for o in self.outcomes if o.ticket]


def resolve_candidate(store: Store, candidate: str) -> tuple[str, str]:
    """A model package's digest and name, from a digest, a unique prefix or a ref (``model/x/candidates/...``)."""
    digest = store.refs.require(candidate) if "/" in candidate and not is_digest(candidate) \
        else store.artifacts.resolve(candidate)
    artifact = store.artifacts.get(digest)
    if artifact.kind != ArtifactKind.MODEL:
        raise InvalidInputError(f"{candidate} is a {artifact.kind} artifact, not a model package: gates judge "
                                "model packages; give a model's digest or its candidate ref")
    return digest, artifact.name or digest[:19]


def _key(subject: str, pset: PolicySet, policies: Sequence[Policy]) -> str:
    versions = {p.id: str(p.version) for p in policies}
    body = canonical_json({"subject": subject, "set": pset.model_dump(mode="json"), "versions": versions,
                           "code": code_version()})
    return f"gate:{subject}:{hashlib.sha256(body).hexdigest()[:32]}"


def _now(store: Store) -> datetime:
    return store.clock() if store.clock else datetime.now(UTC)


def run_gate(store: Store, candidate: str, policies: PolicySet | str = "prod", *, inputs: GateInputs | None = None,
             keys: KeyRing | None = None, registry: PolicyRegistry | None = None, parallel: bool | None = None,
             rerun: bool = False, on_result: Callable[[PolicyResult], None] | None = None) -> GateRun:
    """Judge ``candidate`` with the policy set ``policies`` (a built-in name with ``inputs``, a YAML path, a set).

    ``parallel``: None runs the policies as Ray tasks when Ray is connected; True
    requires it; False stays in this process. ``on_result`` sees each result as it lands.
    """
    from factory.gates._ray import evaluate_on_ray, ray_connected

    pset = policy_set(policies, inputs)
    built = pset.build(registry)  # a bad policy id or config fails here, before a run is recorded
    custom = registry not in (None, default_policies())
    if parallel and (custom or not ray_connected()):
        raise InvalidInputError("parallel=True needs a Ray cluster (call ray.init() or connect first) and policies "
                                "installed as entry points (a registry built by hand cannot reach Ray workers)")
    use_ray = bool(parallel) or (parallel is None and not custom and ray_connected())
    subject, subject_name = resolve_candidate(store, candidate)
    key = _key(subject, pset, built) + (f"@{_now(store).isoformat()}" if rerun else "")
    run = store.runs.start(GATE_RUN_KIND, config={"subject": subject, "set": pset.model_dump(mode="json")},
                           parents=[subject], key=key, name=f"{pset.name} gate on {subject_name}")
    if run.reused:
        return gate_run(store, run)
    try:
        earlier = [a for a in store.artifacts.find(ArtifactKind.ATTESTATION, where={"subject": subject})
                   if a.metadata.get("run") != run.id]
        log.info("gate run %s: %d policies on %s (%s)", run.id, len(built), subject,
                 "Ray tasks" if use_ray else "in process")
        if use_ray:
            results = evaluate_on_ray(store, subject, pset.policies, on_result=on_result)
        else:
            context = PolicyContext(store, clock=lambda: _now(store), subject=subject)
            results = evaluate(store, subject, built, context=context, on_result=on_result)
        outcome = _attest(store, run, subject, subject_name, pset, built, results, keys)
    except BaseException as exc:
        run.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    failed = [o.policy for o in outcome if not o.passed]
    first = not earlier
    run.log_metrics(0, {"policies": len(outcome), "failed": len(failed), "first_gate_run": int(first)})
    run.finish("succeeded", subject=subject, set=pset.name, verdict="fail" if failed else "pass", failed=failed,
               first=first, indices=[o.index for o in outcome], tickets=[o.ticket for o in outcome if o.ticket],
               executor="ray" if use_ray else "process")
    return GateRun(run, subject, subject_name, pset.name, tuple(outcome), first)


def _attest(store: Store, run: Run, subject: str, subject_name: str, pset: PolicySet, built: Sequence[Policy],
            results: Sequence[PolicyResult], keys: KeyRing | None) -> list[GateOutcome]:
    """Sign, log in one batch, record, and open or close tickets."""
    at = _now(store)
    by_id = {p.id: p for p in built}
    envelopes = sign_results(results, by_id, subject_name=subject_name, subject_digest=subject,
                             signer=attestation_signer(store, keys), at=at, actor=store.settings.actor)
    appended = attestation_log(store, keys=keys, writer=True).append(envelopes)
    fields, parents = [], []
    for result in results:
        fields.append({"subject": subject, "subject_name": subject_name, "policy": result.policy,
                       "predicate_type": predicate_type_of(by_id[result.policy]), "verdict": str(result.verdict),
                       "version": result.version, "run": run.id, "set": pset.name, "evaluated_at": at.isoformat()})
        evidence = [d for d in result.evidence.values() if is_digest(d) and store.artifacts.exists(d)]
        parents.append([subject, *evidence])
    artifacts = record_attestations(store, envelopes, appended, fields=fields, parents=parents)
    open_tickets = {t.policy: t for t in list_tickets(store, subject=subject)}
    outcomes = []
    for result, artifact, index in zip(results, artifacts, appended.indices, strict=True):
        run.output(result.policy, artifact.digest)
        policy = by_id[result.policy]
        ticket = None
        if not result.passed:
            opened, _ = open_ticket(store, subject=subject, subject_name=subject_name, policy=result.policy,
                                    predicate_type=predicate_type_of(policy), failure=result.reason,
                                    suggestion=remediation_of(policy), evidence=result.evidence,
                                    attestation=artifact.digest, index=index, run=run.id)
            ticket = opened.id
        elif result.policy in open_tickets:
            close_ticket(store, open_tickets[result.policy].id,
                         reason=f"{result.policy} passed in gate run {run.id} (log index {index})")
        outcomes.append(GateOutcome(result.policy, predicate_type_of(policy), result, artifact.digest, index, ticket))
    return outcomes


def gate_run(store: Store, run: Run | str) -> GateRun:
    """A recorded gate run and its outcomes, read back from its attestations."""
    run = store.runs.get(run) if isinstance(run, str) else run
    if run.kind != GATE_RUN_KIND:
        raise InvalidInputError(f"run {run.id} is a {run.kind} run, not a gate run")
    finished: dict[str, Any] = next((e.details for e in reversed(run.events()) if e.state == "succeeded"), {})
    tickets = set(finished.get("tickets") or ())
    subject = run.config.get("subject", "")
    outcomes = []
    for policy, digest in run.outputs().items():
        meta = store.artifacts.get(digest).metadata
        result = predicate_result(read_statement(store.blobs.get(digest))["predicate"])
        ticket = ticket_id(subject, policy) if ticket_id(subject, policy) in tickets else None
        outcomes.append(GateOutcome(policy, str(meta.get("predicate_type", "")), result, digest,
                                    int(meta.get("index", -1)), ticket))
    order = [p["id"] for p in run.config.get("set", {}).get("policies", [])]
    outcomes.sort(key=lambda o: order.index(o.policy) if o.policy in order else len(order))
    name = store.artifacts.get(subject).name if subject else ""
    return GateRun(run, subject, name or subject[:19], run.config.get("set", {}).get("name", ""), tuple(outcomes),
                   bool(finished.get("first", False)), reused=run.reused)


@dataclass(frozen=True)
class Friction:
    """Promotion friction: of the candidates gated, how many failed their first gate run."""

    candidates: int
    failed_first: int
    failed: tuple[str, ...] = ()

    @property
    def share(self) -> float | None:
        """The share failing their first gate run (None when no candidate was gated)."""
        return self.failed_first / self.candidates if self.candidates else None


def promotion_friction(store: Store, *, since: datetime | None = None, until: datetime | None = None,
                       set_name: str | None = None) -> Friction:
    """The share of candidates whose first gate run (of ``set_name``, if given) failed, computed from the runs.

    A candidate counts in the window ``[since, until)`` by when its first gate run started.
    Runs that crashed (state failed) judged nothing and are skipped; reused runs are not new runs.
    """
    firsts: dict[str, Run] = {}
    for run in sorted(store.runs.list(kind=GATE_RUN_KIND, state="succeeded"), key=lambda r: r.started_at):
        config = run.config
        if set_name is not None and config.get("set", {}).get("name") != set_name:
            continue
        firsts.setdefault(config.get("subject", ""), run)
    counted = {s: r for s, r in firsts.items() if (since is None or r.started_at >= since)
               and (until is None or r.started_at < until)}
    failed = sorted(s for s, r in counted.items()
                    if next((e.details for e in reversed(r.events()) if e.state == "succeeded"), {}).get("verdict")
                    == "fail")
    return Friction(len(counted), len(failed), tuple(failed))
