"""The transparency log: every attestation envelope, in order, under signed checkpoints.

Two append-only logs make one transparency log. The *entries* log holds each envelope's
exact bytes; leaf i of the RFC 6962 tree is SHA-256(0x00 || entry i). The *checkpoints*
log holds one record per append: a C2SP checkpoint (origin, size, root) signed by the
log key, the leaf hashes added since the record's ``start`` and the compact range at
its size. A record authenticates its leaf hashes (with the ones before them they must
hash to the signed root), so a verifier can say exactly which entry changed, moved or
went missing, the way tlog-tiles' level-0 tiles do; the compact range lets the next
writer extend the tree without reading the log back.

Storage is behind ``LogStorage`` (``append(entries) -> first index``, ``size()``,
``read(start, end)``): ``MemoryLogStorage`` for tests and benchmarks, and
``CatalogLogStorage`` on the catalog's append-only log tables (SQLite or PostgreSQL).
Appending never rewrites: a batch is one storage append, then one checkpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from factory.errors import InvalidInputError, NotFoundError, VerificationError
from factory.gates.attestations import check_statement
from factory.gates.dsse import Envelope
from factory.gates.keys import Signer, TrustedKeys
from factory.gates.merkle import (
    ConsistencyProof,
    InclusionProof,
    MerkleTree,
    extend_range,
    leaf_hash,
    range_root,
)
from factory.gates.notes import Checkpoint, open_checkpoint, sign_checkpoint
from factory.store import canonical_json

if TYPE_CHECKING:
    from factory.gates._logverify import LogReport, Receipts

__all__ = [
    "LogStorage",
    "MemoryLogStorage",
    "CatalogLogStorage",
    "CheckpointRecord",
    "Appended",
    "TransparencyLog",
]


@runtime_checkable
class LogStorage(Protocol):
    """An append-only sequence of byte strings."""

    def append(self, entries: Sequence[bytes]) -> int:
        """Append the batch atomically; return the index of its first entry."""

    def size(self) -> int: ...

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]: ...


class MemoryLogStorage:
    """A log in a list: for unit tests and benchmarks (``entries`` is open, so tests can tamper with it)."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []

    def append(self, entries: Sequence[bytes]) -> int:
        first = len(self.entries)
        self.entries.extend(bytes(e) for e in entries)
        return first

    def size(self) -> int:
        return len(self.entries)

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return self.entries[start:end]


class CatalogLogStorage:
    """A named append-only log in the catalog (``catalog.log_append``/``log_size``/``log_read``)."""

    def __init__(self, catalog: Any, log: str):
        for method in ("log_append", "log_size", "log_read"):
            if not hasattr(catalog, method):
                raise InvalidInputError(f"the catalog {type(catalog).__name__} has no {method}(): it cannot hold a "
                                        "transparency log; upgrade factory so the catalog has append-only logs")
        self.catalog = catalog
        self.log = log

    def append(self, entries: Sequence[bytes]) -> int:
        return self.catalog.log_append(self.log, list(entries))

    def size(self) -> int:
        return self.catalog.log_size(self.log)

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return self.catalog.log_read(self.log, start, end)


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


@dataclass(frozen=True)
class Appended:
    """Where a batch landed and the checkpoint that covers it."""

    first: int
    count: int
    checkpoint: Checkpoint
    note: str

    @property
    def indices(self) -> range:
        return range(self.first, self.first + self.count)


class TransparencyLog:
    """Append envelopes, sign checkpoints, serve proofs, verify everything.

    ``signer`` (the log key) signs checkpoints and is needed only to append; ``trust``
    holds the keys that verification accepts, for envelopes and checkpoints alike.
    """

    def __init__(self, entries: LogStorage, checkpoints: LogStorage, *, origin: str, trust: TrustedKeys,
                 signer: Signer | None = None):
        if not origin or any(c.isspace() for c in origin) or "+" in origin:
            raise InvalidInputError(f"{origin!r} cannot be a log origin: use a name like 'factory.local/attestations'")
        self.entries = entries
        self.checkpoints = checkpoints
        self.origin = origin
        self.trust = trust
        self.signer = signer
        self._tree: MerkleTree | None = None
        self._records_read = 0

    @classmethod
    def in_memory(cls, *, origin: str, trust: TrustedKeys, signer: Signer | None = None) -> TransparencyLog:
        return cls(MemoryLogStorage(), MemoryLogStorage(), origin=origin, trust=trust, signer=signer)

    @classmethod
    def on_catalog(cls, catalog: Any, name: str = "attestations", *, origin: str, trust: TrustedKeys,
                   signer: Signer | None = None) -> TransparencyLog:
        """The log ``name`` in the catalog: entries in ``name``, checkpoint records in ``name.checkpoints``."""
        return cls(CatalogLogStorage(catalog, name), CatalogLogStorage(catalog, f"{name}.checkpoints"),
                   origin=origin, trust=trust, signer=signer)

    # -- writing -------------------------------------------------------------------
    def append(self, envelopes: Sequence[bytes | Envelope]) -> Appended:
        """Append a batch of envelopes (one storage append) and sign a checkpoint covering it."""
        if self.signer is None:
            raise InvalidInputError("this log was opened without the log key: open it with signer=keys.signer('log')")
        if not envelopes:
            raise InvalidInputError("nothing to append: give at least one envelope")
        batch = [e.to_json() if isinstance(e, Envelope) else bytes(e) for e in envelopes]
        for data in batch:  # refuse what is not an attestation; signatures are the verifier's business
            check_statement(Envelope.from_json(data))
        first = self.entries.append(batch)
        record = self.checkpoint()
        return Appended(first, len(batch), record.checkpoint, record.note)

    def _last_record(self) -> CheckpointRecord | None:
        """The newest checkpoint record, checked before anything is built on it.

        Its note must verify, its compact range must fold to the signed root, and its
        leaf hashes must carry the previous record's range to its own: a writer never
        signs a checkpoint on top of a tampered one.
        """
        count = self.checkpoints.size()
        if count == 0:
            return None
        raws = self.checkpoints.read(max(0, count - 2), count)
        record = CheckpointRecord.from_bytes(raws[-1])
        checkpoint, _ = open_checkpoint(record.note, self.trust, origin=self.origin)
        prev = CheckpointRecord.from_bytes(raws[0]) if len(raws) == 2 else None
        base_range, base = ((), 0) if prev is None else (prev.range, prev.checkpoint.size)
        consistent = range_root(record.range) == checkpoint.root
        if consistent and record.start <= base <= checkpoint.size:
            rebuilt, _ = extend_range(base_range, base, record.leaves[base - record.start :])
            consistent = tuple(rebuilt) == record.range
        if not consistent:
            raise VerificationError(
                f"the last checkpoint of {self.origin} (record {count - 1}) does not match its leaves: "
                "the log was tampered with; run 'factory attest verify' before appending"
            )
        return record

    def checkpoint(self) -> CheckpointRecord:
        """Sign a checkpoint over every entry now in the log (a no-op record if nothing is new)."""
        if self.signer is None:
            raise InvalidInputError("signing a checkpoint needs the log key: open the log with signer=...")
        last = self._last_record()
        size = 0 if last is None else last.checkpoint.size
        rng = () if last is None else last.range
        end = self.entries.size()
        if last is not None and end == size:
            return last
        leaves = tuple(leaf_hash(e) for e in self.entries.read(size, end))
        new_range, new_size = extend_range(rng, size, leaves)
        note = sign_checkpoint(Checkpoint(self.origin, new_size, range_root(new_range)), self.signer)
        record = CheckpointRecord(note, size, leaves, tuple(new_range))
        self.checkpoints.append([record.to_bytes()])
        return record

    # -- reading and proofs --------------------------------------------------------
    def size(self) -> int:
        return self.entries.size()

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return self.entries.read(start, end)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint, verified against the trusted keys."""
        last = self._last_record()
        return None if last is None else last.checkpoint

    def tree(self) -> MerkleTree:
        """The tree of the leaf hashes that checkpoints authenticate (read once, then kept up to date).

        Only the newest checkpoint's signature is checked here: the leaf hashes of every
        record before it must hash, together, to its signed root, which authenticates
        them all. ``verify`` checks every checkpoint's signature as well.
        """
        tree = self._tree if self._tree is not None else MerkleTree()
        count = self.checkpoints.size()
        records = [CheckpointRecord.from_bytes(raw) for raw in self.checkpoints.read(self._records_read, count)]
        if not records:
            self._tree = tree
            return tree
        rng, size, fresh = tree.compact_range(), tree.size, []
        for record in records:
            if record.start > size:
                raise VerificationError(f"a checkpoint record starts at {record.start}, beyond the {size} "
                                        "leaves before it: run 'factory attest verify'")
            added = record.leaves[size - record.start :]
            rng, size = extend_range(rng, size, added)
            fresh.extend(added)
        checkpoint, _ = open_checkpoint(records[-1].note, self.trust, origin=self.origin)
        if checkpoint.size == size:
            matches = range_root(rng) == checkpoint.root
        else:  # racing writers: the newest record may sign an older size than the leaves reach
            trial = MerkleTree(tree.levels[0] + fresh)
            matches = checkpoint.size < size and trial.root(checkpoint.size) == checkpoint.root
        if not matches:
            raise VerificationError(f"the checkpoint at size {checkpoint.size} does not match the logged leaf "
                                    "hashes: run 'factory attest verify'")
        tree.extend(fresh)
        self._tree, self._records_read = tree, count
        return tree

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[InclusionProof, bytes]:
        """The proof that entry ``index`` is in the tree of ``size`` (default: the latest checkpoint), and the entry."""
        tree = self.tree()
        size = tree.size if size is None else size
        if not 0 <= index < size:
            raise NotFoundError(f"the log {self.origin} proves {tree.size} entries; {index} is not one of them")
        entry = self.entries.read(index, index + 1)
        if not entry or leaf_hash(entry[0]) != tree.leaf(index):
            raise VerificationError(f"entry {index} no longer matches its checkpoint: run 'factory attest verify'")
        return tree.inclusion_proof(index, size), entry[0]

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        return self.tree().consistency_proof(size1, size2)

    def root(self, size: int | None = None) -> bytes:
        return self.tree().root(size)

    # -- verification --------------------------------------------------------------
    def verify(self, *, receipts: Receipts | None = None, full: bool = False, workers: int | None = None) -> LogReport:
        """Check every entry, every signature and the chain of checkpoints; see ``_logverify``."""
        from factory.gates._logverify import verify_log

        return verify_log(self, receipts=receipts, full=full, workers=workers)
