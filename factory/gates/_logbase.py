"""What the transparency log and its verifier share: the storage interface and the checkpoint record.

``log.py`` (``TransparencyLog``) and ``_logverify.py`` both build on this module, and it
imports neither; ``log.py`` re-exports its names.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from factory.errors import VerificationError
from factory.gates.notes import Checkpoint
from factory.store import canonical_json

__all__ = ["LogStorage", "CheckpointRecord"]


@runtime_checkable
class LogStorage(Protocol):
    """An append-only sequence of byte strings."""

    def append(self, entries: Sequence[bytes]) -> int:
        """Append the batch atomically; return the index of its first entry."""

    def size(self) -> int: ...

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class CheckpointRecord:
    """One record of the checkpoints log: a signed checkpoint and the leaf hashes it adds."""

    note: str
    start: int
    leaves: tuple[bytes, ...]
    range: tuple[bytes, ...]

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint in the note, parsed but not verified (verify with ``open_checkpoint``)."""
        return Checkpoint.parse(self.note[: self.note.rfind("\n\n") + 1])

    def to_bytes(self) -> bytes:
        return canonical_json({"note": self.note, "start": self.start, "leaves": _b64(b"".join(self.leaves)),
                               "range": [_b64(h) for h in self.range]})

    @classmethod
    def from_bytes(cls, data: bytes) -> CheckpointRecord:
        try:
            raw = json.loads(data)
            blob = base64.b64decode(raw["leaves"], validate=True)
            if len(blob) % 32 or not isinstance(raw["note"], str) or not isinstance(raw["start"], int):
                raise ValueError("leaves must be whole 32-byte hashes, note a string, start an integer")
            rng = tuple(base64.b64decode(h, validate=True) for h in raw["range"])
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"not a checkpoint record ({exc})") from None
        return cls(raw["note"], raw["start"], tuple(blob[i : i + 32] for i in range(0, len(blob), 32)), rng)
