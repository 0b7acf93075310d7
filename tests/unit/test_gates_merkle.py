"""RFC 6962 Merkle math against the transparency-dev/merkle known answers and a naive recomputation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import VerificationError
from factory.gates.merkle import (
    ConsistencyProof,
    InclusionProof,
    MerkleTree,
    extend_range,
    leaf_hash,
    range_root,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The eight leaves, roots and proofs of transparency-dev/merkle proof/verify_test.go (RFC 6962 test data).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                      "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
INCLUSION = [  # (leaf index, tree size, proof)
    (0, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, ("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",)),
    (1, 5, ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]
CONSISTENCY = [  # (size1, size2, proof)
    (1, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, ("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]


def tree() -> MerkleTree:
    return MerkleTree(leaf_hash(x) for x in LEAVES)


def test_roots_match_the_known_answers_at_every_size():
    """The root hash of each prefix is the one every RFC 6962 log computes."""
    t = tree()
    assert [t.root(n) for n in range(1, 9)] == ROOTS
    assert t.root(0).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_known_answers(index, size, proof):
    """Inclusion proofs are byte-identical to the reference and verify; any bent one is refused."""
    t = tree()
    made = t.inclusion_proof(index, size)
    assert [h.hex() for h in made.hashes] == list(proof)
    verify_inclusion(made, leaf_hash(LEAVES[index]), ROOTS[size - 1])
    bent = [
        InclusionProof(index + 1, size, made.hashes),
        InclusionProof(index, size * 2, made.hashes),
        InclusionProof(index, size, made.hashes[:-1]),
        InclusionProof(index, size, (*made.hashes, ROOTS[0])),
        InclusionProof(index, size, (bytes([made.hashes[0][0] ^ 8]) + made.hashes[0][1:], *made.hashes[1:])),
    ]
    for proof_ in bent:
        with pytest.raises(VerificationError):
            verify_inclusion(proof_, leaf_hash(LEAVES[index]), ROOTS[size - 1])
    with pytest.raises(VerificationError):
        verify_inclusion(made, leaf_hash(b"WrongLeaf"), ROOTS[size - 1])


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_known_answers(size1, size2, proof):
    """Consistency proofs are byte-identical to the reference and verify; swapped roots or a bit flip fail."""
    made = tree().consistency_proof(size1, size2)
    assert [h.hex() for h in made.hashes] == list(proof)
    verify_consistency(made, ROOTS[size1 - 1], ROOTS[size2 - 1])
    with pytest.raises(VerificationError):
        verify_consistency(made, ROOTS[size2 - 1], ROOTS[size1 - 1])
    flipped = (bytes([made.hashes[0][0] ^ 16]) + made.hashes[0][1:], *made.hashes[1:])
    with pytest.raises(VerificationError):
        verify_consistency(ConsistencyProof(size1, size2, flipped), ROOTS[size1 - 1], ROOTS[size2 - 1])
    with pytest.raises(VerificationError):
        verify_consistency(ConsistencyProof(size1, size2, ()), ROOTS[size1 - 1], ROOTS[size2 - 1])


def test_edge_sizes_of_consistency():
    """An empty tree is consistent with anything; equal sizes need equal roots and no proof."""
    verify_consistency(ConsistencyProof(0, 5, ()), b"x" * 32, ROOTS[4])
    verify_consistency(ConsistencyProof(3, 3, ()), ROOTS[2], ROOTS[2])
    with pytest.raises(VerificationError):
        verify_consistency(ConsistencyProof(3, 3, ()), ROOTS[2], ROOTS[3])
    with pytest.raises(VerificationError):
        verify_consistency(ConsistencyProof(4, 3, ()), ROOTS[3], ROOTS[2])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_any_tree_agrees_with_the_naive_definition(entries, data):
    """For any log, roots, proofs and compact ranges agree with a recomputation from the RFC's recursion."""
    leaves = [leaf_hash(e) for e in entries]
    t = MerkleTree(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    old = data.draw(st.integers(0, size))
    index = data.draw(st.integers(0, size - 1))
    assert t.root(size) == root_of(leaves[:size])
    verify_inclusion(t.inclusion_proof(index, size), leaves[index], root_of(leaves[:size]))
    verify_consistency(t.consistency_proof(old, size), root_of(leaves[:old]), root_of(leaves[:size]))
    rng, n = extend_range(t.compact_range(old), old, leaves[old:size])
    assert n == size and rng == t.compact_range(size) and range_root(rng) == root_of(leaves[:size])
