"""Overrides: a person accepts a failed gate, on the record.

``override(store, digest, policy, reason)`` signs an override attestation (predicate
type ``OVERRIDE_TYPE``: which gate, which result, why, and who: ``Settings.actor``),
appends it to the transparency log and records it as an ``override`` artifact whose
parents are the package and the attestation it accepts. Only a gate that did not
pass can be overridden. Admission counts it where the environment accepts overrides
for that predicate type (``EnvironmentPolicy.overridable``) and names it in the
decision; ``factory gates show`` lists it beside the result. The policy's open
remediation ticket is closed with the override's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from factory.errors import InvalidInputError, NotFoundError
from factory.gates.attestations import OVERRIDE_TYPE, attest_override
from factory.gates.ledger import OVERRIDE_KIND, attestation_log, attestation_signer, record_attestations
from factory.gates.runs import resolve_candidate
from factory.gates.tickets import close_ticket, get_ticket, ticket_id
from factory.store import ArtifactKind

if TYPE_CHECKING:
    from factory.gates.keys import KeyRing
    from factory.store import Store

__all__ = ["Override", "override"]


@dataclass(frozen=True)
class Override:
    """A recorded override: what it accepts, who made it and why, and where it is logged."""

    digest: str
    index: int
    subject: str
    policy: str
    overrides: str
    actor: str
    reason: str
    overridden: str
    ticket: str | None = None


def override(store: Store, candidate: str, policy: str, *, reason: str, keys: KeyRing | None = None) -> Override:
    """Accept the failed gate ``policy`` on ``candidate``, signed by this store's actor, logged and recorded."""
    if not reason or not reason.strip():
        raise InvalidInputError("an override needs a reason: say why the failed gate is accepted (--reason TEXT)")
    subject, name = resolve_candidate(store, candidate)
    results = store.artifacts.find(ArtifactKind.ATTESTATION, where={"subject": subject, "policy": policy})
    if not results:
        raise NotFoundError(f"no {policy!r} result for {subject}: run the gate first ('factory gates run "
                            f"{subject[:19]} --set ...'); only a failed gate can be overridden")
    latest = max(results, key=lambda a: a.metadata.get("index", -1))
    meta = latest.metadata
    if meta.get("verdict") == "pass":
        raise InvalidInputError(f"{policy} passed on {subject[:19]} (log index {meta.get('index')}): there is "
                                "nothing to override")
    actor = store.settings.actor
    at = store.clock() if store.clock else datetime.now(UTC)
    overrides = str(meta.get("predicate_type", ""))
    envelope = attest_override(subject_name=name, subject_digest=subject, overrides=overrides, reason=reason.strip(),
                               signer=attestation_signer(store, keys), at=at, actor=actor, policy=policy,
                               overridden={"attestation": latest.digest, "index": meta.get("index")})
    appended = attestation_log(store, keys=keys, writer=True).append([envelope])
    fields = {"subject": subject, "subject_name": name, "policy": policy, "predicate_type": OVERRIDE_TYPE,
              "overrides": overrides, "verdict": "pass", "actor": actor, "reason": reason.strip(),
              "overridden": latest.digest, "evaluated_at": at.isoformat()}
    (artifact,) = record_attestations(store, [envelope], appended, fields=[fields], parents=[[subject, latest.digest]],
                                      kind=OVERRIDE_KIND)
    closed = None
    try:
        ticket = get_ticket(store, ticket_id(subject, policy))
    except NotFoundError:
        ticket = None
    if ticket is not None and ticket.is_open:
        closed = close_ticket(store, ticket.id, reason=f"overridden by {actor}: {reason.strip()}").id
    return Override(artifact.digest, appended.first, subject, policy, overrides, actor, reason.strip(), latest.digest,
                    closed)
