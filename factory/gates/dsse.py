"""DSSE v1 envelopes (Dead Simple Signing Envelope), signed with Ed25519.

The signature covers the pre-authentication encoding, exactly as the DSSE v1 protocol
defines it: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII
decimal byte counts. The JSON form is ``{"payload", "payloadType", "signatures":
[{"keyid", "sig"}]}`` with standard base64, written as canonical JSON so the bytes
that go into the transparency log are the same wherever an envelope is re-serialised.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from factory.errors import VerificationError
from factory.store import canonical_json

if TYPE_CHECKING:
    from factory.gates.keys import Signer, TrustedKey, TrustedKeys

__all__ = ["PAYLOAD_TYPE", "pae", "Signature", "Envelope", "EnvelopeError"]

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding: what is signed."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


class EnvelopeError(VerificationError):
    """An envelope that is malformed or whose signatures do not verify; ``kind`` says which way."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message, kind)
        self.kind = kind


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A payload, its type and the signatures over its PAE."""

    payload: bytes
    payload_type: str = PAYLOAD_TYPE
    signatures: tuple[Signature, ...] = ()

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def sign(self, signer: Signer) -> Envelope:
        """A copy with ``signer``'s signature added."""
        sig = Signature(signer.keyid, signer.sign(self.pae()))
        return Envelope(self.payload, self.payload_type, (*self.signatures, sig))

    def to_dict(self) -> dict:
        return {
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures],
        }

    def to_json(self) -> bytes:
        """Canonical JSON: the exact bytes appended to the transparency log."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        """Parse an envelope; raises ``EnvelopeError`` (kind ``malformed``) naming what is wrong."""
        try:
            raw = json.loads(data)
            payload = base64.b64decode(raw["payload"], validate=True)
            payload_type = raw["payloadType"]
            sigs = tuple(Signature(str(s["keyid"]), base64.b64decode(s["sig"], validate=True))
                         for s in raw["signatures"])
            if not isinstance(payload_type, str):
                raise TypeError("payloadType is not a string")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise EnvelopeError(f"not a DSSE envelope ({type(exc).__name__}: {exc})", "malformed") from None
        if not sigs:
            raise EnvelopeError("the envelope carries no signature", "malformed")
        return cls(payload, payload_type, sigs)

    def verify(self, trust: TrustedKeys, *, signed_at: datetime | None = None) -> TrustedKey:
        """The trusted key whose signature verifies, else ``EnvelopeError``.

        Signatures by keys outside ``trust`` are ignored; a trusted key's signature that
        fails, or a revoked key, or a retired key that signed after its retirement
        (``signed_at``) does not count. The error's ``kind`` is ``untrusted-key``,
        ``bad-signature``, ``revoked-key`` or ``retired-key``.
        """
        message = self.pae()
        problems: list[tuple[str, str]] = []
        for sig in self.signatures:
            key = trust.get(sig.keyid)
            if key is None:
                continue
            if not key.verify(sig.sig, message):
                problems.append(("bad-signature", f"the signature by key {sig.keyid[:16]} ({key.name}) does not verify"))
                continue
            refused = key.accepts(signed_at)
            if refused:
                problems.append(("revoked-key" if key.status == "revoked" else "retired-key", refused))
                continue
            return key
        if problems:
            raise EnvelopeError("; ".join(p for _, p in problems), problems[0][0])
        ids = ", ".join(s.keyid[:16] for s in self.signatures)
        raise EnvelopeError(f"signed only by untrusted key(s) {ids}: trust the signer's public key first",
                            "untrusted-key")
