"""Gates: policy plugins, signed attestations, the transparency log.

A policy (``Policy``: ``id``, ``version``, ``evaluate(package, context)``) judges a
stored model package and returns a ``PolicyResult``. Each result becomes an in-toto
Statement v1 in a DSSE envelope signed with Ed25519 (``attest``), appended to an RFC 6962
transparency log with C2SP signed checkpoints (``TransparencyLog``), and verified
against the trusted keys of a local ``KeyRing``. ``decide`` admits a package to an
environment only when every attestation its ``EnvironmentPolicy`` requires is met.
Policies come from the entry-point group ``factory.policies``; the built-ins live in
``factory.gates.policies``.

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
    "evaluate": "evaluate",
    "sign_results": "evaluate",
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
}

if TYPE_CHECKING:
    from factory.gates._logverify import LogProblem, LogReport
    from factory.gates._receipts import Receipt, Receipts
    from factory.gates.admission import Admission, DEFAULT_ENVIRONMENTS, EnvironmentPolicy, Requirement, decide
    from factory.gates.attestations import Attestation, OVERRIDE_TYPE, STATEMENT_TYPE, attest, attest_override, open_attestation, statement
    from factory.gates.dsse import Envelope, EnvelopeError, PAYLOAD_TYPE, Signature, pae
    from factory.gates.evaluate import evaluate, sign_results
    from factory.gates.keys import KeyRing, Signer, TrustedKey, TrustedKeys, keyid_of
    from factory.gates.log import Appended, CatalogLogStorage, CheckpointRecord, LogStorage, MemoryLogStorage, TransparencyLog
    from factory.gates.merkle import ConsistencyProof, InclusionProof, MerkleTree, leaf_hash, node_hash, verify_consistency, verify_inclusion
    from factory.gates.notes import Checkpoint, open_checkpoint, open_note, sign_checkpoint, sign_note, verifier_key
    from factory.gates.policy import ENTRY_POINT_GROUP, Policy, PolicyContext, PolicyRegistry, PolicyResult, Verdict, default_policies, predicate_type_of
    from factory.gates.policy_sets import PolicySet, PolicySpec


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'factory.gates' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"factory.gates.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
