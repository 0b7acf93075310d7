"""Signed notes and transparency-log checkpoints, in the C2SP formats.

A signed note (c2sp.org/signed-note) is UTF-8 text ending in a newline, a blank line,
then one line per signature: ``— <key name> <base64(key id || signature)>``. For
Ed25519 the 4-byte key id is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``
and the signature is over the note text. A checkpoint (c2sp.org/tlog-checkpoint) is a
note whose text is the log's origin, its size in decimal and its base64 RFC 6962 root
hash, one per line, then optional extension lines. Go's ``golang.org/x/mod/sumdb/note``
and the transparency-dev tools read what this module writes, and the other way round.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from factory.errors import InvalidInputError, VerificationError
from factory.gates.keys import Signer, TrustedKey, TrustedKeys

__all__ = [
    "ALG_ED25519",
    "note_keyid",
    "verifier_key",
    "parse_verifier_key",
    "sign_note",
    "open_note",
    "Checkpoint",
    "sign_checkpoint",
    "open_checkpoint",
]

ALG_ED25519 = 0x01
_DASH = "\u2014"
_SIG_LINE = re.compile(r"^\u2014 (\S+) ([A-Za-z0-9+/=]+)$")
_SIZE = re.compile(r"^(0|[1-9][0-9]*)$")


def note_keyid(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 note key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _check_key_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise InvalidInputError(f"{name!r} cannot name a note key: it must be non-empty, with no spaces and no '+'")
    return name


def verifier_key(name: str, public_key: bytes) -> str:
    """The note verifier key string ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
    _check_key_name(name)
    encoded = base64.b64encode(bytes([ALG_ED25519]) + public_key).decode()
    return f"{name}+{note_keyid(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """The name and raw public key of a verifier key string; raises if its id does not match."""
    try:
        name, keyid, encoded = text.split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
        if len(raw) != 33 or raw[0] != ALG_ED25519 or len(keyid) != 8:
            raise ValueError("not an Ed25519 key")
        if note_keyid(_check_key_name(name), raw[1:]).hex() != keyid:
            raise ValueError("the key id does not match the key")
    except (ValueError, binascii.Error, InvalidInputError) as exc:
        raise InvalidInputError(f"{text!r} is not a note verifier key ({exc}): expected NAME+KEYID+BASE64") from None
    return name, raw[1:]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise InvalidInputError("a note's text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise InvalidInputError("a note's text must not hold control characters other than newline")


def sign_note(text: str, name: str, signer: Signer) -> str:
    """``text`` signed by ``signer`` under the key name ``name``."""
    _check_text(text)
    _check_key_name(name)
    blob = note_keyid(name, signer.public_key) + signer.sign(text.encode())
    return f"{text}\n{_DASH} {name} {base64.b64encode(blob).decode()}\n"


def _split(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    if not note.endswith("\n") or "\n\n" not in note:
        raise VerificationError("not a signed note: no blank line before the signatures")
    cut = note.rfind("\n\n")
    text, block = note[: cut + 1], note[cut + 2 :]
    sigs = []
    for line in block.splitlines():
        match = _SIG_LINE.match(line)
        if not match:
            raise VerificationError(f"malformed signature line {line[:60]!r}")
        try:
            blob = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise VerificationError(f"the signature of {match.group(1)!r} is not base64") from None
        if len(blob) < 5:
            raise VerificationError(f"the signature of {match.group(1)!r} is too short")
        sigs.append((match.group(1), blob[:4], blob[4:]))
    if not sigs:
        raise VerificationError("the note carries no signature")
    return text, sigs


def open_note(note: str, keys: Iterable[TrustedKey] | TrustedKeys) -> tuple[str, list[TrustedKey]]:
    """The text of a note and the trusted keys whose signatures verify.

    Signatures by unknown keys are ignored; a known key's signature that fails rejects
    the whole note, as does a note with no verified signature (signed-note spec).
    """
    text, sigs = _split(note)
    _check_text(text)
    verified = []
    for name, keyid, sig in sigs:
        for key in keys:
            if note_keyid(name, key.public_key) != keyid:
                continue
            if not key.verify(sig, text.encode()):
                raise VerificationError(f"the signature of {name} (key {key.keyid[:16]}) does not verify")
            if key.status != "revoked":
                verified.append(key)
    if not verified:
        names = ", ".join(n for n, _, _ in sigs)
        raise VerificationError(f"no trusted key signed this note (signed by {names})")
    return text, verified


@dataclass(frozen=True)
class Checkpoint:
    """A log's size and root hash, under its origin name."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not all(lines[:-1]):
            raise VerificationError("a checkpoint has at least three non-empty lines: origin, size, root hash")
        origin, size, root = lines[0], lines[1], lines[2]
        if not _SIZE.match(size):
            raise VerificationError(f"checkpoint size {size!r} is not a decimal number")
        try:
            raw = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise VerificationError(f"checkpoint root {root!r} is not base64") from None
        if len(raw) != 32:
            raise VerificationError(f"checkpoint root has {len(raw)} bytes, not 32")
        return cls(origin, int(size), raw, tuple(lines[3:-1]))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer, name: str | None = None) -> str:
    """The checkpoint as a signed note; the key name defaults to the origin, as the spec advises."""
    return sign_note(checkpoint.text(), name or checkpoint.origin, signer)


def open_checkpoint(note: str, trust: TrustedKeys, *, origin: str | None = None) -> tuple[Checkpoint, list[TrustedKey]]:
    """A verified checkpoint (signed by a trusted key, of the expected origin) and who signed it."""
    text, keys = open_note(note, trust)
    checkpoint = Checkpoint.parse(text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint, keys
