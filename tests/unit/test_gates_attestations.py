"""In-toto Statement v1 in DSSE envelopes: the exact PAE, and an independent implementation agrees."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import SSlibKey

from factory.gates import PAYLOAD_TYPE, STATEMENT_TYPE, Envelope, EnvelopeError, KeyRing, open_attestation, pae

from gates_kit import SUBJECT, envelope


def sslib_key(signer) -> SSlibKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(signer.public_key), keyid=signer.keyid)


def test_pae_is_the_dsse_v1_encoding():
    """The signed bytes are DSSE v1's pre-authentication encoding, as in the protocol's own example."""
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae(PAYLOAD_TYPE, "\u00e9".encode()) == b"DSSEv1 28 application/vnd.in-toto+json 2 \xc3\xa9"


def test_statement_is_in_toto_v1_about_the_package(tmp_path):
    """The payload names the package by name and sha256, with a predicate type and the result inside."""
    signer = KeyRing(tmp_path / "k").signer()
    env = envelope(signer, 3, verdict="fail")
    body = json.loads(env.payload)
    assert body["_type"] == STATEMENT_TYPE
    assert body["subject"] == [{"name": "iris", "digest": {"sha256": SUBJECT.removeprefix("sha256:")}}]
    assert body["predicateType"] == "https://factory.dev/t/v1"
    assert body["predicate"]["verdict"] == "fail" and body["predicate"]["figures"] == {"i": 3}
    assert body["predicate"]["evaluatedAt"].startswith("2026-01-01T00:00:03")
    assert env.payload_type == PAYLOAD_TYPE and env.signatures[0].keyid == signer.keyid
    att = open_attestation(env.to_json(), KeyRing(tmp_path / "k").trusted())
    assert (att.subject_digest, att.predicate_type, att.verdict) == (SUBJECT, "https://factory.dev/t/v1", "fail")


def test_securesystemslib_verifies_our_envelopes_and_rejects_a_tampered_one(tmp_path):
    """Our envelopes verify with securesystemslib's DSSE module; one changed payload byte fails there and here."""
    keys = KeyRing(tmp_path / "k")
    signer = keys.signer()
    data = envelope(signer).to_json()
    theirs = SslibEnvelope.from_dict(json.loads(data))
    accepted = theirs.verify([sslib_key(signer)], 1)
    assert list(accepted) == [signer.keyid]
    assert theirs.pae() == Envelope.from_json(data).pae()

    raw = json.loads(data)
    payload = bytearray(base64.b64decode(raw["payload"]))
    payload[40] ^= 0x01
    raw["payload"] = base64.b64encode(bytes(payload)).decode()
    with pytest.raises(SslibVerificationError):
        SslibEnvelope.from_dict(json.loads(json.dumps(raw))).verify([sslib_key(signer)], 1)
    with pytest.raises(EnvelopeError) as err:
        Envelope.from_json(json.dumps(raw)).verify(keys.trusted())
    assert err.value.kind == "bad-signature"


def test_an_envelope_signed_by_securesystemslib_verifies_here(tmp_path):
    """Interoperability the other way: securesystemslib signs, factory verifies with the same key id."""
    from securesystemslib.signer import CryptoSigner

    sslib_signer = CryptoSigner.generate_ed25519()
    env = SslibEnvelope(envelope(KeyRing(tmp_path / "k").signer()).payload, PAYLOAD_TYPE, {})
    env.sign(sslib_signer)
    public = bytes.fromhex(sslib_signer.public_key.keyval["public"])
    keys = KeyRing(tmp_path / "k")
    trusted = keys.trust(public, "partner")
    env.signatures = {trusted.keyid: next(iter(env.signatures.values()))}
    env.signatures[trusted.keyid].keyid = trusted.keyid
    att = open_attestation(json.dumps(env.to_dict()).encode(), keys.trusted())
    assert att.key.name == "partner"


def test_untrusted_and_malformed_envelopes_say_why(tmp_path):
    """An envelope from a key nobody trusts, or one that is not DSSE, fails with a reason naming it."""
    mine, theirs = KeyRing(tmp_path / "mine"), KeyRing(tmp_path / "theirs")
    mine.signer()
    with pytest.raises(EnvelopeError, match="untrusted") as err:
        open_attestation(envelope(theirs.signer()).to_json(), mine.trusted())
    assert err.value.kind == "untrusted-key"
    with pytest.raises(EnvelopeError, match="not a DSSE envelope"):
        open_attestation(b'{"payload": 1}', mine.trusted())


def test_numpy_figures_sign_as_plain_json(tmp_path):
    """A plugin may report numpy numbers; they are signed as plain JSON and NaN becomes null."""
    import numpy as np

    from factory.gates import PolicyResult, attest

    result = PolicyResult("p", "1.0", "pass", figures={"auc": np.float32(0.5), "n": np.int64(7), "gap": np.nan})
    env = attest(result, subject_name="iris", subject_digest=SUBJECT, predicate_type="https://x/v1",
                 signer=KeyRing(tmp_path / "k").signer(), at=datetime(2026, 1, 1, tzinfo=UTC),
                 actor="t")
    assert json.loads(env.payload)["predicate"]["figures"] == {"auc": 0.5, "n": 7, "gap": None}
