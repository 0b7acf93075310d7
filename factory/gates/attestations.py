"""Policy results as in-toto Statement v1 attestations in DSSE envelopes.

The statement's subject is the package: its name and its sha256 digest; the
``predicateType`` names the policy (and its major version); the predicate holds the
verdict, the reason, the figures, the evidence digests, the policy's configuration,
when it was evaluated and by what code. ``attest`` signs it; ``open_attestation``
checks an envelope against the trusted keys and gives the statement back, parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from factory._version import code_version
from factory.errors import InvalidInputError, VerificationError
from factory.gates.dsse import PAYLOAD_TYPE, Envelope, EnvelopeError
from factory.gates.keys import Signer, TrustedKey, TrustedKeys
from factory.gates.policy import PolicyResult, Verdict
from factory.store import canonical_json, check_digest

__all__ = ["STATEMENT_TYPE", "OVERRIDE_TYPE", "statement", "attest", "attest_override", "Attestation",
           "open_attestation", "predicate_result", "read_statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
OVERRIDE_TYPE = "https://factory.dev/attestations/override/v1"


def statement(subject_name: str, subject_digest: str, predicate_type: str, predicate: Mapping[str, Any]) -> dict:
    """An in-toto Statement v1 about one subject (``subject_digest`` is ``sha256:<hex>``)."""
    hexdigest = check_digest(subject_digest).removeprefix("sha256:")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": hexdigest}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def attest(
    result: PolicyResult,
    *,
    subject_name: str,
    subject_digest: str,
    predicate_type: str,
    signer: Signer,
    at: datetime,
    actor: str,
    config: Mapping[str, Any] | None = None,
) -> Envelope:
    """Sign ``result`` as an attestation about the package ``subject_digest``."""
    predicate = {
        **result.to_dict(),
        "config": dict(config or {}),
        "evaluatedAt": _timestamp(at),
        "evaluator": {"actor": actor, "code": code_version()},
    }
    payload = canonical_json(statement(subject_name, subject_digest, predicate_type, predicate))
    return Envelope(payload, PAYLOAD_TYPE).sign(signer)


def attest_override(*, subject_name: str, subject_digest: str, overrides: str, reason: str, signer: Signer,
                    at: datetime, actor: str, policy: str = "", overridden: Mapping[str, Any] | None = None) -> Envelope:
    """A person's signed decision to accept a failed gate: which predicate type, why, and who.

    ``policy`` names the gate and ``overridden`` identifies the result accepted (its
    attestation's digest and log index), so the override reads on its own.
    """
    if not reason.strip():
        raise InvalidInputError("an override needs a reason: say why the failed gate is accepted (--reason TEXT)")
    predicate = {"overrides": overrides, "reason": reason, "actor": actor, "verdict": str(Verdict.PASS),
                 "evaluatedAt": _timestamp(at), "evaluator": {"actor": actor, "code": code_version()}}
    if policy:
        predicate["policy"] = policy
    if overridden:
        predicate["overridden"] = dict(overridden)
    payload = canonical_json(statement(subject_name, subject_digest, OVERRIDE_TYPE, predicate))
    return Envelope(payload, PAYLOAD_TYPE).sign(signer)


@dataclass(frozen=True)
class Attestation:
    """A verified attestation: who signed it, about what, which predicate, and when."""

    envelope: Envelope
    key: TrustedKey
    subject_name: str
    subject_digest: str
    predicate_type: str
    predicate: Mapping[str, Any]
    evaluated_at: datetime | None
    index: int | None = None  # its place in the transparency log, once proven there

    @property
    def verdict(self) -> Verdict | None:
        value = self.predicate.get("verdict")
        return Verdict(value) if value in set(Verdict) else None

    @property
    def is_override(self) -> bool:
        return self.predicate_type == OVERRIDE_TYPE

    def result(self) -> PolicyResult:
        """The policy result this attestation signs (an override reads as a PASS of the gate it accepts)."""
        return predicate_result(self.predicate)


def predicate_result(predicate: Mapping[str, Any]) -> PolicyResult:
    """The ``PolicyResult`` a statement's predicate carries (a verdict it does not know reads as FAIL)."""
    p = predicate
    figures = p.get("figures") if isinstance(p.get("figures"), dict) else {}
    evidence = p.get("evidence") if isinstance(p.get("evidence"), dict) else {}
    verdict = p.get("verdict") if p.get("verdict") in set(Verdict) else Verdict.FAIL
    return PolicyResult(str(p.get("policy", "")), str(p.get("version", "")), verdict, str(p.get("reason", "")),
                        figures, {str(k): str(v) for k, v in evidence.items()})


def _parse_statement(envelope: Envelope) -> tuple[dict, datetime | None]:
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EnvelopeError(f"payload type {envelope.payload_type!r} is not {PAYLOAD_TYPE!r}", "malformed")
    try:
        body = json.loads(envelope.payload)
        if body.get("_type") != STATEMENT_TYPE:
            raise ValueError(f"_type is {body.get('_type')!r}, not {STATEMENT_TYPE!r}")
        subject = body["subject"][0]
        check_digest("sha256:" + subject["digest"]["sha256"])
        if not isinstance(body["predicateType"], str) or not isinstance(body.get("predicate", {}), dict):
            raise ValueError("predicateType must be a string and predicate an object")
        stamp = body.get("predicate", {}).get("evaluatedAt")
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, VerificationError) as exc:
        raise EnvelopeError(f"the payload is not an in-toto Statement v1 ({exc})", "malformed") from None
    return body, when


def check_envelope(data: bytes, trust: TrustedKeys) -> TrustedKey:
    """The key whose signature on a logged envelope verifies; raises ``EnvelopeError``.

    The log's fast path: the statement was checked when it was appended, and bytes that
    still match their authenticated leaf are those bytes, so it is parsed again only
    when a retired key signed, to compare the signing time with the retirement.
    """
    envelope = Envelope.from_json(data)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EnvelopeError(f"payload type {envelope.payload_type!r} is not {PAYLOAD_TYPE!r}", "malformed")
    key = envelope.verify(trust)
    if key.status == "retired":
        _, when = _parse_statement(envelope)
        refused = key.accepts(when)
        if refused:
            raise EnvelopeError(refused, "retired-key")
    return key


def check_statement(envelope: Envelope) -> None:
    """Raise ``EnvelopeError`` unless the envelope carries an in-toto Statement v1 (checked on append)."""
    _parse_statement(envelope)


def read_statement(data: bytes) -> dict:
    """The statement inside an envelope, parsed but NOT verified (for display of what a record holds)."""
    body, _ = _parse_statement(Envelope.from_json(data))
    return body


def open_attestation(data: bytes | Envelope, trust: TrustedKeys) -> Attestation:
    """Verify an envelope against ``trust`` and parse its statement; raises ``EnvelopeError``."""
    envelope = data if isinstance(data, Envelope) else Envelope.from_json(data)
    body, when = _parse_statement(envelope)
    key = envelope.verify(trust, signed_at=when)
    subject = body["subject"][0]
    return Attestation(envelope, key, subject.get("name", ""), "sha256:" + subject["digest"]["sha256"],
                       body["predicateType"], body.get("predicate", {}), when)
