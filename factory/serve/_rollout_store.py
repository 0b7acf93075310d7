"""What a rollout keeps in the store besides its run: evidence, tickets and operators' commands.

- ``rollout-evidence``: an artifact holding the figures of the window that decided a
  rollback (or was current at a manual one), with the candidate, the incumbent and the
  run as parents, and recorded as the run's ``evidence`` output.
- Tickets go through ``TicketSink``. ``StoreTickets`` writes a ``ticket`` artifact and
  the ref ``ticket/<id>``: a stand-in until the gates package's ticket API is wired in.
- Commands: an operator's pause, resume, rollback, or notice of a manual promotion,
  posted while another process (the host) owns the rollout's run. Each command is a
  ``rollout-command`` artifact; posting moves the ref ``rollout/<run id>/commands`` to it
  by compare-and-swap, so the ref's history is the ordered queue, and each move records
  the actor who posted it (``Settings.actor``, never a string the caller makes up).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from factory.errors import InvalidInputError, RefConflictError
from factory.store import register_kind, register_ref_namespace

if TYPE_CHECKING:
    from factory.serve._rollout_config import RolloutSpec
    from factory.store import Run, Store

__all__ = ["EVIDENCE_KIND", "COMMAND_KIND", "ACTIONS", "Command", "TicketRequest", "TicketSink", "StoreTickets",
           "write_evidence", "post_command", "read_commands", "commands_ref"]

EVIDENCE_KIND = register_kind("rollout-evidence", "the figures of the analysis window behind a rollout's rollback")
COMMAND_KIND = register_kind("rollout-command", "an operator's command to a rollout (pause, resume, rollback, ...)")
register_ref_namespace("rollout/*/commands", COMMAND_KIND)

# What an operator may post: pause, resume and rollback act; the two notices record a
# promotion an operator made (or was refused) on the environment's ref themselves.
ACTIONS = ("pause", "resume", "rollback", "promoted", "promote-refused")
_POST_ATTEMPTS = 20


def commands_ref(run_id: str) -> str:
    return f"rollout/{run_id}/commands"


def write_evidence(store: Store, spec: RolloutSpec, run: Run, *, reason: str, by: str,
                   analysis: Mapping[str, Any] | None, stage: int, weight: float) -> str:
    """Record the deciding window as a ``rollout-evidence`` artifact and the run's ``evidence`` output."""
    metadata = {
        "format": "factory.rollout-evidence/v1", "model": spec.model, "env": spec.env, "run": run.id,
        "candidate": spec.candidate, "incumbent": spec.incumbent, "stage": stage, "weight": weight,
        "reason": reason, "by": by, "analysis": analysis,
    }
    artifact = store.artifacts.add(EVIDENCE_KIND, metadata=metadata, parents=[spec.candidate, spec.incumbent],
                                   name=f"{spec.model}-{spec.env}-rollout-evidence")
    run.output("evidence", artifact.digest)
    return artifact.digest


@dataclass(frozen=True)
class TicketRequest:
    """A remediation ticket for a rolled-back candidate: what broke, where the figures are."""

    ticket_id: str
    title: str
    body: str
    subject: str
    evidence: str
    run_id: str
    model: str
    env: str
    labels: tuple[str, ...] = ("rollout", "rollback")


class TicketSink(Protocol):
    """Opens remediation tickets; returns the ticket's id."""

    def open(self, request: TicketRequest) -> str: ...


class StoreTickets:
    """Tickets as ``ticket`` artifacts behind ``ticket/<id>`` (until the gates' ticket API takes over)."""

    def __init__(self, store: Store):
        self.store = store

    def open(self, request: TicketRequest) -> str:
        metadata = {"format": "factory.ticket/v0", "id": request.ticket_id, "title": request.title,
                    "body": request.body, "subject": request.subject, "evidence": request.evidence,
                    "run": request.run_id, "model": request.model, "env": request.env,
                    "labels": list(request.labels), "state": "open", "opened_by": self.store.settings.actor}
        artifact = self.store.artifacts.add("ticket", metadata=metadata, name=request.ticket_id,
                                            parents=[request.subject, request.evidence])
        name = f"ticket/{request.ticket_id}"
        if self.store.refs.get(name) != artifact.digest:
            self.store.refs.set(name, artifact.digest, reason=request.title)
        return request.ticket_id


@dataclass(frozen=True)
class Command:
    """One posted command: its place in the queue (``seq``), what, why, who and when."""

    seq: int
    action: str
    reason: str
    actor: str
    at: str
    digest: str
    details: dict[str, Any] = field(default_factory=dict)


def post_command(store: Store, run_id: str, action: str, reason: str, **details: Any) -> Command:
    """Append a command to run ``run_id``'s queue, as this store's actor."""
    if action not in ACTIONS:
        raise InvalidInputError(f"{action!r} is not a rollout command: use one of {', '.join(ACTIONS)}")
    if not reason.strip():
        raise InvalidInputError(f"say why you {action} the rollout: give --reason")
    name = commands_ref(run_id)
    for _ in range(_POST_ATTEMPTS):
        previous = store.refs.get(name)
        metadata = {"run": run_id, "action": action, "reason": reason, "nonce": uuid.uuid4().hex,
                    "previous": previous, "details": details}
        artifact = store.artifacts.add(COMMAND_KIND, metadata=metadata, name=f"{run_id}-{action}")
        try:
            change = store.refs.set(name, artifact.digest, expected=previous, reason=f"{action}: {reason}")
        except RefConflictError:
            continue  # another command went in first: queue behind it
        return Command(change.seq, action, reason, change.actor, change.at, artifact.digest, dict(details))
    raise RefConflictError(f"could not queue {action!r} on rollout {run_id}: the queue kept moving; try again",
                           name)


def read_commands(store: Store, run_id: str, after: int = 0) -> list[Command]:
    """The commands posted to run ``run_id`` after queue position ``after``, oldest first."""
    out = []
    for change in store.refs.history(commands_ref(run_id)):
        if change.seq <= after or change.new is None:
            continue
        meta = store.artifacts.get(change.new).metadata
        out.append(Command(change.seq, meta["action"], meta["reason"], change.actor, change.at, change.new,
                           dict(meta.get("details") or {})))
    return out
