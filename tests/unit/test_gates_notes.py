"""C2SP signed notes and checkpoints: byte-compatible with Go's sumdb/note, tampering refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from factory.errors import InvalidInputError, VerificationError
from factory.gates import Checkpoint, Signer, TrustedKeys, open_checkpoint, open_note, sign_checkpoint, sign_note
from factory.gates.notes import parse_verifier_key, verifier_key

# The example key and note of golang.org/x/mod/sumdb/note's tests.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd" \
                    "ngotpRZb6KE6RyyBwJnAM=\n"


def go_signer() -> Signer:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return Signer("peter", Ed25519PrivateKey.from_private_bytes(seed))


def test_signing_reproduces_the_go_reference_note_byte_for_byte():
    """A note we sign is exactly what Go's note package signs, so Go witnesses and verifiers read ours."""
    signer = go_signer()
    assert sign_note(GO_TEXT, "PeterNeumann", signer) == GO_NOTE
    assert verifier_key("PeterNeumann", signer.public_key) == GO_VKEY
    assert parse_verifier_key(GO_VKEY) == ("PeterNeumann", signer.public_key)
    text, keys = open_note(GO_NOTE, TrustedKeys.of(signer.trusted()))
    assert text == GO_TEXT and keys[0].keyid == signer.keyid


def test_a_changed_note_or_an_unknown_signer_is_refused():
    """One changed character, or no signature by a trusted key, and the note does not open."""
    trusted = TrustedKeys.of(go_signer().trusted())
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), trusted)
    stranger = Signer("x", Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError, match="no trusted key"):
        open_note(sign_note(GO_TEXT, "PeterNeumann", stranger), trusted)
    with pytest.raises(InvalidInputError):
        parse_verifier_key(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_checkpoint_format_and_round_trip():
    """A checkpoint is origin, size and base64 root on three lines, signed under the origin's name."""
    signer = Signer("log", Ed25519PrivateKey.generate())
    checkpoint = Checkpoint("example.com/log42", 20852163, bytes(range(32)))
    note = sign_checkpoint(checkpoint, signer)
    lines = note.split("\n")
    assert lines[:4] == ["example.com/log42", "20852163", base64.b64encode(bytes(range(32))).decode(), ""]
    assert lines[4].startswith("\u2014 example.com/log42 ")
    opened, _ = open_checkpoint(note, TrustedKeys.of(signer.trusted()), origin="example.com/log42")
    assert opened == checkpoint
    with pytest.raises(VerificationError, match="not 'other/log'"):
        open_checkpoint(note, TrustedKeys.of(signer.trusted()), origin="other/log")
    with pytest.raises(VerificationError):
        Checkpoint.parse("example.com/log42\n007\nAAAA\n")
