"""Remediation tickets: what a failed gate asks the package's owner to fix.

A failing policy opens a ticket: a ``ticket`` artifact saying what failed (the policy,
its reason, the attestation and its log index), the evidence digests and a suggested
fix in words (the policy's ``remediation``). Its state lives in the ref
``ticket/<id>``: open while the ref points at an open ticket, closed once it points at
a closed-state ticket artifact (parent: the open one), so every opening and closing is
a ref move with its actor, time and reason in the ref's history.

One ticket per package and policy (``<digest12>-<policy>``): failing again while it is
open changes nothing; failing after it was closed reopens it. A later pass or an
override closes it, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, NotFoundError, RefConflictError
from factory.store import ArtifactKind, check_digest

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["Ticket", "ticket_id", "open_ticket", "close_ticket", "get_ticket", "list_tickets", "TICKET_PREFIX"]

TICKET_PREFIX = "ticket/"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ATTEMPTS = 5


def ticket_id(subject: str, policy: str) -> str:
    """The ticket of one package and one policy: ``<first 12 hex of the digest>-<policy>``."""
    hexdigest = check_digest(subject).removeprefix("sha256:")
    return f"{hexdigest[:12]}-{_UNSAFE.sub('-', policy).strip('-') or 'policy'}"


@dataclass(frozen=True)
class Ticket:
    """One ticket as its ref shows it now."""

    id: str
    state: str
    subject: str
    subject_name: str
    policy: str
    predicate_type: str
    failure: str
    suggestion: str
    evidence: Mapping[str, str] = field(default_factory=dict)
    attestation: str | None = None
    index: int | None = None
    run: str | None = None
    opened_at: str = ""
    opened_by: str = ""
    closed_at: str | None = None
    closed_by: str | None = None
    closed_reason: str | None = None
    digest: str = ""

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}

    @classmethod
    def _from_metadata(cls, digest: str, meta: Mapping[str, Any]) -> Ticket:
        if meta.get("format") == ROLLBACK_TICKET_FORMAT:
            meta = _rollback_fields(meta)
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in meta.items() if k in names and k != "digest"}, digest=digest)


# Serving's rollouts open a ticket when they roll a candidate back (factory.serve's StoreTickets)
# under the same ``ticket/`` refs, in their own format: read here as a ticket of policy "rollout",
# so `factory tickets` lists and closes both, and a gate run after a rollback reads them.
ROLLBACK_TICKET_FORMAT = "factory.ticket/v0"


def _rollback_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    evidence = meta.get("evidence")
    return {**meta, "id": meta.get("id", ""), "state": meta.get("state", "open"), "subject": meta.get("subject", ""),
            "subject_name": meta.get("model", ""), "policy": "rollout", "predicate_type": "",
            "failure": meta.get("title", ""), "suggestion": meta.get("body", ""),
            "evidence": {"rollout": evidence} if isinstance(evidence, str) else dict(evidence or {})}


def _now(store: Store) -> str:
    return (store.clock() if store.clock else datetime.now(UTC)).isoformat()


def get_ticket(store: Store, ticket: str) -> Ticket:
    """The ticket ``ticket`` (an id, or ``ticket/<id>``) in its current state."""
    name = ticket if ticket.startswith(TICKET_PREFIX) else TICKET_PREFIX + ticket
    target = store.refs.get(name)
    if target is None:
        raise NotFoundError(f"no ticket {ticket!r}: list them with 'factory tickets --all'")
    return Ticket._from_metadata(target, store.artifacts.get(target).metadata)


def open_ticket(store: Store, *, subject: str, subject_name: str, policy: str, predicate_type: str, failure: str,
                suggestion: str, evidence: Mapping[str, str] | None = None, attestation: str | None = None,
                index: int | None = None, run: str | None = None) -> tuple[Ticket, bool]:
    """Open the ticket for ``policy`` on ``subject`` unless it is open already; returns it and whether it is new."""
    tid = ticket_id(subject, policy)
    name = TICKET_PREFIX + tid
    for _ in range(_ATTEMPTS):
        current = store.refs.get(name)
        if current is not None:
            existing = Ticket._from_metadata(current, store.artifacts.get(current).metadata)
            if existing.is_open:
                return existing, False
        meta = {"id": tid, "state": "open", "subject": subject, "subject_name": subject_name, "policy": policy,
                "predicate_type": predicate_type, "failure": failure, "suggestion": suggestion,
                "evidence": dict(evidence or {}), "attestation": attestation, "index": index, "run": run,
                "opened_at": _now(store), "opened_by": store.settings.actor}
        parents = [subject] + ([attestation] if attestation else []) + ([current] if current else [])
        artifact = store.artifacts.add(ArtifactKind.TICKET, metadata=meta, parents=parents, name=tid)
        try:
            store.refs.set(name, artifact.digest, expected=current,
                           reason=f"{policy} failed on {subject_name}" + (" again" if current else ""))
        except RefConflictError:
            continue  # someone opened or closed it meanwhile: read it again
        return Ticket._from_metadata(artifact.digest, meta), True
    raise RefConflictError(f"ticket {tid} kept moving while it was being opened: retry", name)


def close_ticket(store: Store, ticket: str, *, reason: str) -> Ticket:
    """Close an open ticket, saying why; the ref moves to a closed-state ticket whose parent is the open one."""
    if not reason or not reason.strip():
        raise InvalidInputError("closing a ticket needs a reason: say what was done (--reason TEXT)")
    for _ in range(_ATTEMPTS):
        current = get_ticket(store, ticket)
        if not current.is_open:
            raise InvalidInputError(f"ticket {current.id} is already closed (by {current.closed_by}: "
                                    f"{current.closed_reason}); list open ones with 'factory tickets'")
        meta = {**store.artifacts.get(current.digest).metadata, "state": "closed", "closed_at": _now(store),
                "closed_by": store.settings.actor, "closed_reason": reason.strip()}
        artifact = store.artifacts.add(ArtifactKind.TICKET, metadata=meta, parents=[current.digest], name=current.id)
        try:
            store.refs.set(TICKET_PREFIX + current.id, artifact.digest, expected=current.digest, reason=reason.strip())
        except RefConflictError:
            continue
        return Ticket._from_metadata(artifact.digest, meta)
    raise RefConflictError(f"ticket {ticket} kept moving while it was being closed: retry", ticket)


def list_tickets(store: Store, *, include_closed: bool = False, subject: str | None = None) -> list[Ticket]:
    """Tickets as their refs show them now (open ones only, unless ``include_closed``), oldest first."""
    out = []
    for ref in store.refs.list(TICKET_PREFIX):
        ticket = Ticket._from_metadata(ref.target, store.artifacts.get(ref.target).metadata)
        if (include_closed or ticket.is_open) and (subject is None or ticket.subject == subject):
            out.append(ticket)
    return sorted(out, key=lambda t: (t.opened_at, t.id))
