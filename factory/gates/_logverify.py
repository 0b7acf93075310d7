"""Verifying a transparency log: the checkpoint chain, every entry, every signature.

1. Every checkpoint record's note must carry a trusted log key's signature for this
   origin; its leaf hashes must agree with those before it and, with them, hash to the
   signed root. The leaves that pass are *authenticated*.
2. Every entry is hashed and compared with the authenticated leaf at its index. A
   mismatch is classified: changed bytes, an entry moved from another index
   (reordered), entries gone (removed, or the tail truncated); entries after the last
   checkpoint are counted as not yet covered.
3. Every envelope's signature is checked against the trusted keys, in parallel over
   processes. A receipt from an earlier full verification by this verifier lets the
   entries it covers be skipped when their bytes are provably unchanged (see
   ``_receipts``); ``full=True`` checks them all anyway.

Each problem names its entry index (or checkpoint record) and what was found there.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from factory.errors import VerificationError
from factory.gates._logbase import CheckpointRecord
from factory.gates._parallel import check_envelopes, check_notes
from factory.gates._receipts import Receipt, Receipts, records_hash
from factory.gates.merkle import MerkleTree, extend_range, leaf_hash, range_root
from factory.gates.notes import Checkpoint

if TYPE_CHECKING:
    from typing import Protocol

    from factory.gates._logbase import LogStorage
    from factory.gates.keys import TrustedKeys

    class TransparencyLog(Protocol):
        """What verifying needs of a ``log.TransparencyLog`` (which imports this module)."""

        entries: LogStorage
        checkpoints: LogStorage
        origin: str
        trust: TrustedKeys

__all__ = ["LogProblem", "LogReport", "verify_log"]


@dataclass(frozen=True)
class LogProblem:
    """One thing wrong with the log, at an entry ``index`` or a checkpoint ``record``."""

    kind: str
    detail: str
    index: int | None = None
    record: int | None = None

    def __str__(self) -> str:
        where = f"entry {self.index}" if self.index is not None else f"checkpoint record {self.record}"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class LogReport:
    """The outcome of verifying a log. ``ok`` when no problem was found."""

    origin: str
    entries: int
    checkpoints: int
    covered: int
    latest: Checkpoint | None
    problems: tuple[LogProblem, ...]
    signatures_checked: int
    signatures_skipped: int
    receipt: str

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def uncovered(self) -> int:
        """Entries after the last checkpoint: signature-checked, but not yet in any signed tree."""
        return max(0, self.entries - self.covered)

    def at(self, index: int) -> list[LogProblem]:
        return [p for p in self.problems if p.index == index]


def _authenticate(records: list[bytes], log: TransparencyLog, skip_notes: int, workers: int | None,
                  problems: list[LogProblem]) -> tuple[MerkleTree, Checkpoint | None]:
    """The tree of authenticated leaf hashes, from the checkpoint records."""
    parsed: dict[int, CheckpointRecord] = {}
    for k, raw in enumerate(records):
        try:
            parsed[k] = CheckpointRecord.from_bytes(raw)
        except VerificationError as exc:
            problems.append(LogProblem("malformed-checkpoint", str(exc), record=k))
    to_check = [(k, r.note) for k, r in parsed.items() if k >= skip_notes]
    bad_notes = check_notes(to_check, log.trust, log.origin, workers=workers)
    tree, latest = MerkleTree(), None
    for k, record in sorted(parsed.items()):
        if k in bad_notes:
            problems.append(LogProblem("checkpoint-signature", bad_notes[k], record=k))
            continue
        try:
            checkpoint = record.checkpoint
        except VerificationError as exc:
            problems.append(LogProblem("malformed-checkpoint", str(exc), record=k))
            continue
        problem = _extend(tree, record, checkpoint)
        if problem:
            problems.append(LogProblem("checkpoint-inconsistent", problem, record=k))
        elif latest is None or checkpoint.size >= latest.size:
            latest = checkpoint
    return tree, latest


def _extend(tree: MerkleTree, record: CheckpointRecord, checkpoint: Checkpoint) -> str | None:
    """Add a record's leaves to the authenticated tree if they agree with it and its signed root."""
    start, leaves = record.start, record.leaves
    if start + len(leaves) != checkpoint.size:
        return f"it starts at {start} with {len(leaves)} leaf hashes but signs size {checkpoint.size}"
    if start > tree.size:
        return f"it starts at {start}, but the checkpoints before it prove only {tree.size} entries"
    overlap = min(tree.size, checkpoint.size) - start
    for i in range(overlap):
        if leaves[i] != tree.leaf(start + i):
            return f"its leaf hash for entry {start + i} differs from the one an earlier checkpoint signed"
    fresh = leaves[overlap:]
    if fresh:
        new_range, _ = extend_range(tree.compact_range(), tree.size, fresh)
        if range_root(new_range) != checkpoint.root:
            return f"its leaf hashes do not hash to the root it signs at size {checkpoint.size}"
        tree.extend(fresh)
    elif tree.root(checkpoint.size) != checkpoint.root:
        return f"its root at size {checkpoint.size} differs from the tree the earlier checkpoints prove"
    return None


def _compare(leaves: list[bytes], tree: MerkleTree, problems: list[LogProblem]) -> set[int]:
    """Indices whose entry matches its authenticated leaf; reports every other one."""
    n, covered = len(leaves), tree.size
    matched = {i for i in range(min(n, covered)) if leaves[i] == tree.leaf(i)}
    if len(matched) == min(n, covered) and n >= covered:
        return matched
    positions: dict[bytes, list[int]] = {}
    for i in range(covered):
        positions.setdefault(tree.leaf(i), []).append(i)
    present = Counter(leaves)
    # A logged leaf is missing when the log now holds it fewer times than the checkpoints do (duplicates count).
    # An entry replaced in place (bytes changed) is reported as changed, not as a removal.
    missing = sorted(p for leaf, ps in positions.items() for p in ps[present.get(leaf, 0):]
                     if not (p < n and leaves[p] not in positions))
    if missing and missing[0] >= n and missing == list(range(missing[0], covered)):
        problems.append(LogProblem("truncated", f"the log holds {n} entries but its checkpoints prove {covered}: "
                                                f"entries {n} to {covered - 1} are gone", index=n))
    else:
        for p in missing:
            problems.append(LogProblem("removed", f"the entry logged at index {p} is no longer in the log", index=p))
    for i in range(min(n, covered)):
        if i in matched:
            continue
        candidates = positions.get(leaves[i])
        if candidates is None:
            problems.append(LogProblem("changed", "its bytes differ from what was logged at this index", index=i))
        elif all(p - bisect.bisect_left(missing, p) != i for p in candidates):  # not merely shifted by removals
            problems.append(LogProblem("reordered", f"it holds the entry logged at index {candidates[0]}", index=i))
    return matched


def verify_log(log: TransparencyLog, *, receipts: Receipts | None = None, full: bool = False,
               workers: int | None = None) -> LogReport:
    problems: list[LogProblem] = []
    records = log.checkpoints.read(0, None)
    receipt: Receipt | None = None
    receipt_state = "none"
    if receipts is not None:
        try:
            receipt = receipts.load(log.origin)
        except VerificationError as exc:
            receipt_state = f"ignored ({exc})"
    if receipt is not None:
        receipt_state = f"size {receipt.size}"
        void = receipt.void_reason(log.trust)
        if void or full:
            receipt_state = f"size {receipt.size}, not used ({void or 'full verification asked for'})"
            receipt = None
    skip_notes = 0
    if receipt is not None and receipt.records <= len(records) \
            and records_hash(records[: receipt.records]) == receipt.records_digest:
        skip_notes = receipt.records

    tree, latest = _authenticate(records, log, skip_notes, workers, problems)
    skip_entries = 0
    if receipt is not None:
        if receipt.size > tree.size:
            problems.append(LogProblem("rolled-back", f"this verifier checked {receipt.size} entries before; the "
                                                      f"checkpoints now prove only {tree.size}", index=tree.size))
        elif tree.root(receipt.size) != receipt.root:
            problems.append(LogProblem("forked", f"the first {receipt.size} entries differ from those this verifier "
                                                 "checked before (the root at that size changed)", index=0))
        else:
            skip_entries = receipt.size

    entries = log.entries.read(0, None)
    leaves = [leaf_hash(e) for e in entries]
    matched = _compare(leaves, tree, problems)
    todo = [(i, entries[i]) for i in range(len(entries)) if not (i < skip_entries and i in matched)]
    for index, kind, detail in check_envelopes(todo, log.trust, workers=workers):
        problems.append(LogProblem(kind, detail, index=index))

    problems.sort(key=lambda p: (p.index if p.index is not None else -1, p.record or 0))
    report = LogReport(log.origin, len(entries), len(records), tree.size, latest, tuple(problems), len(todo),
                       len(entries) - len(todo), receipt_state)
    if receipts is not None and report.ok and tree.size:
        receipts.save(Receipt(log.origin, tree.size, tree.root(), len(records), records_hash(records),
                              log.trust.usable()))
    return report
