"""Gates: policy plugins, signed attestations, the transparency log, admission per environment.

A policy (``Policy``: ``id``, ``version``, ``evaluate(package, context)``) judges a
stored model package and returns a ``PolicyResult``. Each result becomes an in-toto
Statement v1 in a DSSE envelope signed with Ed25519 (``attest``), appended to an RFC 6962
transparency log with C2SP signed checkpoints (``TransparencyLog``), and verified
against the trusted keys of a local ``KeyRing``. ``decide`` admits a package to an
environment only when every attestation its ``EnvironmentPolicy`` requires is met.
Policies come from the entry-point group ``factory.policies``; the built-ins live in
``factory.gates.policies``.

On a store: ``run_gate(store, digest, "prod", inputs=GateInputs(...))`` judges a
candidate as a store run, signs and logs every result in one batch (the log lives in
the catalog: ``attestation_log``), records each as an ``attestation`` artifact, and
opens a remediation ticket (``list_tickets``, ``close_ticket``) per failure;
``override`` accepts a failed gate on the record; ``admit(store, digest, env)`` says
whether an environment (``policy/env/<env>``: ``environment``, ``set_environment``)
may serve the package and, if not, exactly what is missing; ``promotion_friction``
is the share of candidates that fail their first gate run.

Names load on first use, so importing this package (or one of its modules in a
verification worker) stays cheap; fairlearn, scipy, modelscan and torch load only inside
the policies that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "Policy",
    "PolicyContext",
    "PolicyRegistry",
    "PolicyResult",
    "Verdict",
    "default_policies",
    "predicate_type_of",
    "PolicySet",
    "PolicySpec",
    "evaluate",
    "measure_quality",
    "sign_results",
    "EnvironmentPolicy",
    "Admission",
    "Requirement",
    "decide",
    "DEFAULT_ENVIRONMENTS",
    "STATEMENT_TYPE",
    "OVERRIDE_TYPE",
    "Attestation",
    "attest",
    "attest_override",
    "open_attestation",
    "statement",
    "PAYLOAD_TYPE",
    "Envelope",
    "EnvelopeError",
    "Signature",
    "pae",
    "KeyRing",
    "Signer",
    "TrustedKey",
    "TrustedKeys",
    "keyid_of",
    "LogStorage",
    "MemoryLogStorage",
    "CatalogLogStorage",
    "CheckpointRecord",
    "Appended",
    "TransparencyLog",
    "LogProblem",
    "LogReport",
    "Receipt",
    "Receipts",
    "MerkleTree",
    "InclusionProof",
    "ConsistencyProof",
    "leaf_hash",
    "node_hash",
    "verify_inclusion",
    "verify_consistency",
    "Checkpoint",
    "sign_checkpoint",
    "open_checkpoint",
    "sign_note",
    "open_note",
    "verifier_key",
    "EVIDENCE_KIND",
    "remediation_of",
    "GateInputs",
    "BUILTIN_SETS",
    "builtin_set",
    "policy_set",
    "CONTRACT_TYPE",
    "policy_type",
    "GATE_RUN_KIND",
    "GateOutcome",
    "GateRun",
    "run_gate",
    "gate_run",
    "resolve_candidate",
    "Friction",
    "promotion_friction",
    "ENVIRONMENT_KIND",
    "environment",
    "list_environments",
    "set_environment",
    "admit",
    "LOG_NAME",
    "OVERRIDE_KIND",
    "Logged",
    "attestation_log",
    "logged",
    "latest_results",
    "Ticket",
    "ticket_id",
    "open_ticket",
    "close_ticket",
    "get_ticket",
    "list_tickets",
    "Override",
    "override",
]

_WHERE = {
    "ENTRY_POINT_GROUP": "policy",
    "Policy": "policy",
    "PolicyContext": "policy",
    "PolicyRegistry": "policy",
    "PolicyResult": "policy",
    "Verdict": "policy",
    "default_policies": "policy",
    "predicate_type_of": "policy",
    "PolicySet": "policy_sets",
    "PolicySpec": "policy_sets",
    "evaluate": "evaluation",
    "measure_quality": "policies.quality",
    "sign_results": "evaluation",
    "EnvironmentPolicy": "admission",
    "Admission": "admission",
    "Requirement": "admission",
    "decide": "admission",
    "DEFAULT_ENVIRONMENTS": "admission",
    "STATEMENT_TYPE": "attestations",
    "OVERRIDE_TYPE": "attestations",
    "Attestation": "attestations",
    "attest": "attestations",
    "attest_override": "attestations",
    "open_attestation": "attestations",
    "statement": "attestations",
    "PAYLOAD_TYPE": "dsse",
    "Envelope": "dsse",
    "EnvelopeError": "dsse",
    "Signature": "dsse",
    "pae": "dsse",
    "KeyRing": "keys",
    "Signer": "keys",
    "TrustedKey": "keys",
    "TrustedKeys": "keys",
    "keyid_of": "keys",
    "LogStorage": "log",
    "MemoryLogStorage": "log",
    "CatalogLogStorage": "log",
    "CheckpointRecord": "log",
    "Appended": "log",
    "TransparencyLog": "log",
    "LogProblem": "_logverify",
    "LogReport": "_logverify",
    "Receipt": "_receipts",
    "Receipts": "_receipts",
    "MerkleTree": "merkle",
    "InclusionProof": "merkle",
    "ConsistencyProof": "merkle",
    "leaf_hash": "merkle",
    "node_hash": "merkle",
    "verify_inclusion": "merkle",
    "verify_consistency": "merkle",
    "Checkpoint": "notes",
    "sign_checkpoint": "notes",
    "open_checkpoint": "notes",
    "sign_note": "notes",
    "open_note": "notes",
    "verifier_key": "notes",
    "EVIDENCE_KIND": "policy",
    "remediation_of": "policy",
    "GateInputs": "policy_sets",
    "BUILTIN_SETS": "policy_sets",
    "builtin_set": "policy_sets",
    "policy_set": "policy_sets",
    "CONTRACT_TYPE": "admission",
    "policy_type": "admission",
    "GATE_RUN_KIND": "runs",
    "GateOutcome": "runs",
    "GateRun": "runs",
    "run_gate": "runs",
    "gate_run": "runs",
    "resolve_candidate": "runs",
    "Friction": "runs",
    "promotion_friction": "runs",
    "ENVIRONMENT_KIND": "environments",
    "environment": "environments",
    "list_environments": "environments",
    "set_environment": "environments",
    "admit": "environments",
    "LOG_NAME": "ledger",
    "OVERRIDE_KIND": "ledger",
    "Logged": "ledger",
    "attestation_log": "ledger",
    "logged": "ledger",
    "latest_results": "ledger",
    "Ticket": "tickets",
    "ticket_id": "tickets",
    "open_ticket": "tickets",
    "close_ticket": "tickets",
    "get_ticket": "tickets",
    "list_tickets": "tickets",
    "Override": "overrides",
    "override": "overrides",
}

if TYPE_CHECKING:
    from factory.gates._logverify import LogProblem, LogReport
    from factory.gates._receipts import Receipt, Receipts
    from factory.gates.admission import (
        CONTRACT_TYPE,
        DEFAULT_ENVIRONMENTS,
        Admission,
        EnvironmentPolicy,
        Requirement,
        decide,
        policy_type,
    )
    from factory.gates.attestations import Attestation, OVERRIDE_TYPE, STATEMENT_TYPE, attest, attest_override, open_attestation, statement
    from factory.gates.dsse import Envelope, EnvelopeError, PAYLOAD_TYPE, Signature, pae
    from factory.gates.evaluation import evaluate, sign_results
    from factory.gates.keys import KeyRing, Signer, TrustedKey, TrustedKeys, keyid_of
    from factory.gates.log import Appended, CatalogLogStorage, CheckpointRecord, LogStorage, MemoryLogStorage, TransparencyLog
    from factory.gates.merkle import ConsistencyProof, InclusionProof, MerkleTree, leaf_hash, node_hash, verify_consistency, verify_inclusion
    from factory.gates.notes import Checkpoint, open_checkpoint, open_note, sign_checkpoint, sign_note, verifier_key
    from factory.gates.environments import ENVIRONMENT_KIND, admit, environment, list_environments, set_environment
    from factory.gates.ledger import LOG_NAME, OVERRIDE_KIND, Logged, attestation_log, latest_results, logged
    from factory.gates.overrides import Override, override
    from factory.gates.policy import (
        ENTRY_POINT_GROUP,
        EVIDENCE_KIND,
        Policy,
        PolicyContext,
        PolicyRegistry,
        PolicyResult,
        Verdict,
        default_policies,
        predicate_type_of,
        remediation_of,
    )
    from factory.gates.policies.quality import measure_quality
    from factory.gates.policy_sets import BUILTIN_SETS, GateInputs, PolicySet, PolicySpec, builtin_set, policy_set
    from factory.gates.runs import (
        GATE_RUN_KIND,
        Friction,
        GateOutcome,
        GateRun,
        gate_run,
        promotion_friction,
        resolve_candidate,
        run_gate,
    )
    from factory.gates.tickets import Ticket, close_ticket, get_ticket, list_tickets, open_ticket, ticket_id


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'factory.gates' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"factory.gates.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
