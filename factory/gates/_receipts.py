"""What this verifier has already checked: a cosigned checkpoint kept next to its keys.

After a verification that found nothing wrong, the verifier signs (with its own local
key ``verifier``) a note in checkpoint form: the log's origin, the size and root it
checked, and two extension lines, ``records <n> <hash>`` (the checkpoint records it
checked, hashed in order) and ``trusted <keyid> ...`` (the keys it trusted then). The
next verification recomputes the root over the current entries: equal to the receipt's
root, the first ``size`` entries are byte for byte those whose signatures were checked,
so checking them again would give the same answer, unless a key trusted then has been
revoked since, which voids the receipt. This is a transparency-log monitor's state,
kept locally (mode 0600, like the keys) and never taken from the log itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from factory.errors import VerificationError
from factory.gates.keys import KeyRing, TrustedKeys
from factory.gates.notes import Checkpoint, open_note, sign_note

__all__ = ["Receipt", "Receipts", "records_hash"]

_VERIFIER = "verifier"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def records_hash(records: Iterable[bytes]) -> bytes:
    """SHA-256 over the SHA-256 of each checkpoint record, in order."""
    outer = hashlib.sha256()
    for record in records:
        outer.update(hashlib.sha256(record).digest())
    return outer.digest()


@dataclass(frozen=True)
class Receipt:
    """A size and root this verifier checked in full, with the records and keys it checked them under."""

    origin: str
    size: int
    root: bytes
    records: int
    records_digest: bytes
    trusted: frozenset[str]

    def checkpoint(self) -> Checkpoint:
        ext = (f"records {self.records} {base64.b64encode(self.records_digest).decode()}",
               "trusted " + " ".join(sorted(self.trusted)))
        return Checkpoint(self.origin, self.size, self.root, ext)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> Receipt:
        try:
            records_line, trusted_line = checkpoint.extensions
            word, count, digest = records_line.split(" ")
            if word != "records" or not trusted_line.startswith("trusted "):
                raise ValueError("unexpected extension lines")
            trusted = frozenset(trusted_line.split(" ")[1:])
            return cls(checkpoint.origin, checkpoint.size, checkpoint.root, int(count), base64.b64decode(digest),
                       trusted)
        except ValueError as exc:
            raise VerificationError(f"not a verification receipt ({exc})") from None

    def void_reason(self, trust: TrustedKeys) -> str | None:
        """Why this receipt no longer lets signatures be skipped, or ``None``."""
        revoked = sorted(k for k in self.trusted if (key := trust.get(k)) is not None and key.status == "revoked")
        if revoked:
            return f"key(s) {', '.join(k[:16] for k in revoked)} were revoked since the last full verification"
        return None


class Receipts:
    """Receipts of one verifier, one per log origin, in ``<keys>/receipts/``."""

    def __init__(self, keys: KeyRing):
        self.keys = keys

    def _file(self, origin: str):
        return self.keys.path / "receipts" / (_SAFE.sub("_", origin) + ".note")

    def load(self, origin: str) -> Receipt | None:
        """The receipt for ``origin``, if one exists and carries this verifier's valid signature."""
        file = self._file(origin)
        if not file.exists():
            return None
        signer = self.keys.signer(_VERIFIER)
        text, _ = open_note(file.read_text(), [signer.trusted()])
        receipt = Receipt.from_checkpoint(Checkpoint.parse(text))
        if receipt.origin != origin:
            raise VerificationError(f"the receipt in {file} is for {receipt.origin!r}, not {origin!r}: delete it")
        return receipt

    def save(self, receipt: Receipt) -> None:
        note = sign_note(receipt.checkpoint().text(), _VERIFIER, self.keys.signer(_VERIFIER))
        file = self._file(receipt.origin)
        file.parent.mkdir(mode=0o700, exist_ok=True)
        self.keys._write(f"{file.parent.name}/{file.name}", note.encode(), 0o600)
