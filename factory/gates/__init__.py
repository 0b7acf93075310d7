"""Gates: policy plugins, signed attestations, the transparency log.

A policy (``Policy``: ``id``, ``version``, ``evaluate(package, context)``) judges a
stored model package and returns a ``PolicyResult``. Each result becomes an in-toto
Statement v1 in a DSSE envelope signed with Ed25519 (``attest``), appended to an RFC 6962
transparency log with C2SP signed checkpoints (``TransparencyLog``), and verified
against the trusted keys of a local ``KeyRing``. ``decide`` admits a package to an
environment only when every attestation its ``EnvironmentPolicy`` requires is met. Policies come from the entry-point
group ``factory.policies``; the built-ins live in ``factory.gates.policies``.

Importing this package loads neither fairlearn, scipy, modelscan nor torch.
"""

from __future__ import annotations

from factory.gates._logverify import LogProblem, LogReport
from factory.gates._receipts import Receipt, Receipts
from factory.gates.admission import DEFAULT_ENVIRONMENTS, Admission, EnvironmentPolicy, Requirement, decide
from factory.gates.attestations import (
    OVERRIDE_TYPE,
    STATEMENT_TYPE,
    Attestation,
    attest,
    attest_override,
    open_attestation,
    statement,
)
from factory.gates.dsse import PAYLOAD_TYPE, Envelope, EnvelopeError, Signature, pae
from factory.gates.evaluate import evaluate, sign_results
from factory.gates.keys import KeyRing, Signer, TrustedKey, TrustedKeys, keyid_of
from factory.gates.log import (
    Appended,
    CatalogLogStorage,
    CheckpointRecord,
    LogStorage,
    MemoryLogStorage,
    TransparencyLog,
)
from factory.gates.merkle import (
    ConsistencyProof,
    InclusionProof,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from factory.gates.notes import Checkpoint, open_checkpoint, open_note, sign_checkpoint, sign_note, verifier_key
from factory.gates.policy import (
    ENTRY_POINT_GROUP,
    Policy,
    PolicyContext,
    PolicyRegistry,
    PolicyResult,
    Verdict,
    default_policies,
    predicate_type_of,
)
from factory.gates.policy_sets import PolicySet, PolicySpec

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
