"""RFC 6962 Merkle tree math: tree hashes, inclusion and consistency proofs.

A leaf hash is SHA-256(0x00 || bytes) and an interior node SHA-256(0x01 || left ||
right) (RFC 6962 section 2.1, unchanged in RFC 9162). ``MerkleTree`` keeps every level
of complete subtrees, so the root at any earlier size and any proof cost O(log n)
hashes; proofs are generated with RFC 6962's PATH and SUBPROOF and verified with the
RFC 9162 section 2.1.3.2 and 2.1.4.2 algorithms. A compact range (the roots of the
perfect subtrees that make up a tree of size n, largest first) lets a writer extend a
tree it has not read back: it is what a checkpoint record carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from factory.errors import InvalidInputError, VerificationError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "root_of",
    "MerkleTree",
    "InclusionProof",
    "ConsistencyProof",
    "verify_inclusion",
    "verify_consistency",
    "compact_range",
    "extend_range",
    "range_root",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, straight from RFC 6962's recursive definition (for checks and tests)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


@dataclass(frozen=True)
class InclusionProof:
    """The audit path proving that leaf ``index`` is in the tree of ``size`` leaves."""

    index: int
    size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    """The hashes proving that the tree of ``size1`` leaves is a prefix of the tree of ``size2``."""

    size1: int
    size2: int
    hashes: tuple[bytes, ...]


class MerkleTree:
    """An append-only Merkle tree over leaf hashes, keeping every complete subtree's hash.

    ``levels[j][i]`` is the hash of the perfect subtree of 2**j leaves starting at leaf
    ``i * 2**j``; appending a leaf adds at most one node per level.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()):
        self.levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    def __len__(self) -> int:
        return len(self.levels[0])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise InvalidInputError(f"a leaf hash has {HASH_SIZE} bytes, not {len(leaf)}: pass leaf_hash(entry)")
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            below = self.levels[level]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(below[-2], below[-1]))
            level += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index]

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end): stored when perfect and aligned, else composed."""
        n = end - start
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self.levels[level][start >> level]
        k = _split(n)
        return node_hash(self._subtree(start, start + k), self._subtree(start + k, end))

    def _size(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise InvalidInputError(f"the tree holds {self.size} leaves; size {size} is out of range")
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the first ``size`` leaves (all of them by default)."""
        size = self._size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def compact_range(self, size: int | None = None) -> list[bytes]:
        """The roots of the perfect subtrees making up the first ``size`` leaves, largest first."""
        size = self._size(size)
        out, start = [], 0
        for bit in reversed(range(size.bit_length())):
            if size >> bit & 1:
                out.append(self._subtree(start, start + (1 << bit)))
                start += 1 << bit
        return out

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """RFC 6962 PATH(index, D[size])."""
        size = self._size(size)
        if not 0 <= index < size:
            raise InvalidInputError(f"leaf {index} is not in a tree of {size} leaves: give 0 <= index < size")
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start, m = start + k, m - k
        return InclusionProof(index, size, tuple(reversed(path)))

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """RFC 6962 PROOF(size1, D[size2]) = SUBPROOF(size1, D[size2], true)."""
        size2 = self._size(size2)
        if not 0 <= size1 <= size2:
            raise InvalidInputError(f"cannot prove size {size1} against size {size2}: give 0 <= size1 <= size2")
        if size1 in (0, size2):
            return ConsistencyProof(size1, size2, ())
        path: list[bytes] = []
        start, end, m, whole = 0, size2, size1, True
        while True:
            n = end - start
            if m == n:
                if not whole:
                    path.append(self._subtree(start, end))
                break
            k = _split(n)
            if m <= k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start, m, whole = start + k, m - k, False
        return ConsistencyProof(size1, size2, tuple(reversed(path)))


def _lsb(x: int) -> int:
    return x & 1


def _fail(message: str) -> VerificationError:
    return VerificationError(message)


def verify_inclusion(proof: InclusionProof, leaf: bytes, root: bytes) -> None:
    """Raise ``VerificationError`` unless ``proof`` shows ``leaf`` (a leaf hash) in the tree with ``root``."""
    if not 0 <= proof.index < proof.size:
        raise _fail(f"inclusion proof for leaf {proof.index} in a tree of {proof.size}: index out of range")
    fn, sn, r = proof.index, proof.size - 1, leaf
    for p in proof.hashes:
        if sn == 0:
            raise _fail(f"inclusion proof for leaf {proof.index} of {proof.size} has too many hashes")
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail(f"inclusion proof for leaf {proof.index} of {proof.size} has too few hashes")
    if r != root:
        raise _fail(f"inclusion proof for leaf {proof.index} of {proof.size} does not lead to the root")


def verify_consistency(proof: ConsistencyProof, root1: bytes, root2: bytes) -> None:
    """Raise ``VerificationError`` unless the tree with ``root1`` is a prefix of the tree with ``root2``."""
    size1, size2, path = proof.size1, proof.size2, list(proof.hashes)
    what = f"consistency proof from size {size1} to {size2}"
    if not 0 <= size1 <= size2:
        raise _fail(f"{what}: the first size must not exceed the second")
    if size1 == size2:
        if path or root1 != root2:
            raise _fail(f"{what}: equal sizes need an empty proof and equal roots")
        return
    if size1 == 0:
        if path:
            raise _fail(f"{what}: an empty tree is consistent with any tree and needs no proof")
        return
    if not path:
        raise _fail(f"{what}: the proof is empty")
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise _fail(f"{what} has too many hashes")
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail(f"{what} has too few hashes")
    if fr != root1:
        raise _fail(f"{what} does not lead to the first root")
    if sr != root2:
        raise _fail(f"{what} does not lead to the second root")


def compact_range(leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The compact range of a whole list of leaf hashes (see ``MerkleTree.compact_range``)."""
    return MerkleTree(leaf_hashes).compact_range()


def extend_range(rng: Sequence[bytes], size: int, leaves: Iterable[bytes]) -> tuple[list[bytes], int]:
    """Append leaves to the compact range of a tree of ``size`` leaves; returns the new range and size.

    Works like a binary counter: a new leaf merges with the smallest subtrees while
    they are of equal size.
    """
    out = list(rng)
    if len(out) != bin(size).count("1"):
        raise InvalidInputError(f"a compact range for size {size} holds {bin(size).count('1')} hashes, not {len(out)}")
    for leaf in leaves:
        out.append(leaf)
        carry = size
        while carry & 1:
            right = out.pop()
            out[-1] = node_hash(out[-1], right)
            carry >>= 1
        size += 1
    return out, size


def range_root(rng: Sequence[bytes]) -> bytes:
    """The root of a tree from its compact range (folded right to left)."""
    if not rng:
        return EMPTY_ROOT
    r = rng[-1]
    for h in reversed(rng[:-1]):
        r = node_hash(h, r)
    return r
