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
import threading
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
    verify_inclusion,
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
        self._checkpoint: Checkpoint | None = None
        self._note = ""
        self._last: tuple[int, bytes, CheckpointRecord] | None = None  # a writer's newest record, checked
        self._lock = threading.Lock()

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
        batch = []
        for item in envelopes:  # refuse what is not an attestation; signatures are the verifier's business
            envelope = item if isinstance(item, Envelope) else Envelope.from_json(item)
            check_statement(envelope)
            batch.append(envelope.to_json() if isinstance(item, Envelope) else bytes(item))
        first = self.entries.append(batch)
        record = self._sign(first, batch)
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
        if self._last is not None and self._last[0] == count \
                and self.checkpoints.read(count - 1, count) == [self._last[1]]:
            return self._last[2]  # the record this object wrote or checked last, byte for byte
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
        self._last = (count, raws[-1], record)
        return record

    def _sign(self, first: int, batch: Sequence[bytes]) -> CheckpointRecord:
        """Sign a checkpoint through the batch just appended at ``first``.

        The batch's leaf hashes are computed from the bytes in hand; only entries other
        writers appended between the last checkpoint and ``first`` are read back.
        """
        last = self._last_record()
        size = 0 if last is None else last.checkpoint.size
        end = first + len(batch)
        if last is not None and end <= size:
            return last  # another writer's checkpoint already covers this batch
        others = self.entries.read(size, first) if first > size else []
        leaves = tuple(leaf_hash(e) for e in [*others, *batch[max(0, size - first):]])
        return self._write_record(last, size, leaves)

    def _write_record(self, last: CheckpointRecord | None, size: int, leaves: tuple[bytes, ...]) -> CheckpointRecord:
        new_range, new_size = extend_range(() if last is None else last.range, size, leaves)
        note = sign_checkpoint(Checkpoint(self.origin, new_size, range_root(new_range)), self.signer)
        record = CheckpointRecord(note, size, leaves, tuple(new_range))
        raw = record.to_bytes()
        index = self.checkpoints.append([raw])
        self._last = (index + 1, raw, record)
        return record

    def checkpoint(self) -> CheckpointRecord:
        """Sign a checkpoint over every entry now in the log (a no-op record if nothing is new)."""
        if self.signer is None:
            raise InvalidInputError("signing a checkpoint needs the log key: open the log with signer=...")
        last = self._last_record()
        size = 0 if last is None else last.checkpoint.size
        end = self.entries.size()
        if last is not None and end == size:
            return last
        leaves = tuple(leaf_hash(e) for e in self.entries.read(size, end))
        return self._write_record(last, size, leaves)

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
        them all. ``verify`` checks every checkpoint's signature as well. Safe to call
        from several threads: a long-lived reader (a serving replica) keeps one log.
        """
        with self._lock:
            return self._refresh()[0]

    def _refresh(self) -> tuple[MerkleTree, Checkpoint | None]:
        tree = self._tree if self._tree is not None else MerkleTree()
        count = self.checkpoints.size()
        if count <= self._records_read:
            self._tree = tree
            return tree, self._checkpoint
        records = [CheckpointRecord.from_bytes(raw) for raw in self.checkpoints.read(self._records_read, count)]
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
        if self._checkpoint is None or checkpoint.size >= self._checkpoint.size:
            self._checkpoint, self._note = checkpoint, records[-1].note
        self._tree, self._records_read = tree, count
        return tree, self._checkpoint

    def signed_checkpoint(self) -> str:
        """The newest checkpoint as the signed note it was verified from ('' before the first)."""
        with self._lock:
            self._refresh()
            return self._note

    def prove(self, index: int, *, refresh: bool = True) -> tuple[Checkpoint, InclusionProof, bytes]:
        """Entry ``index``, proven included in the newest signed checkpoint: (checkpoint, proof, entry bytes).

        The proof is checked before it is returned (``VerificationError`` if the entry's
        bytes no longer hash to what the checkpoints signed); ``NotFoundError`` if no
        signed checkpoint covers ``index`` yet. ``refresh=False`` proves against the
        checkpoint read last (one catalog read fewer, for a caller proving several).
        """
        with self._lock:
            tree, checkpoint = self._refresh() if refresh or self._tree is None else (self._tree, self._checkpoint)
        if checkpoint is None or not 0 <= index < checkpoint.size:
            covered = 0 if checkpoint is None else checkpoint.size
            raise NotFoundError(f"the log {self.origin} has signed checkpoints over {covered} entries; {index} is "
                                f"not one of them: give an index from 0 to {covered - 1}" if covered else
                                f"the log {self.origin} has no signed checkpoint yet: nothing can be proven")
        entry = self.entries.read(index, index + 1)
        if not entry:
            raise VerificationError(f"entry {index} of {self.origin} is gone from the log: run 'factory attest verify'")
        proof = tree.inclusion_proof(index, checkpoint.size)
        try:
            verify_inclusion(proof, leaf_hash(entry[0]), checkpoint.root)
        except VerificationError:
            raise VerificationError(f"entry {index} of {self.origin} no longer matches what checkpoint "
                                    f"{checkpoint.size} signed: run 'factory attest verify'") from None
        return checkpoint, proof, entry[0]

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
