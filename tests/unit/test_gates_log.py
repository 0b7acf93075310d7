"""The transparency log: appends under signed checkpoints, proofs, and tampering found at its index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factory.errors import InvalidInputError, VerificationError
from factory.gates import (
    CatalogLogStorage,
    CheckpointRecord,
    KeyRing,
    Receipts,
    TransparencyLog,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
)

from gates_kit import envelope, memory_log


@pytest.fixture
def keys(tmp_path):
    return KeyRing(tmp_path / "keys")


@pytest.fixture
def log(keys):
    """A log of 12 attestations appended in three batches."""
    log = memory_log(keys)
    signer = keys.signer()
    for batch in ((0, 5), (5, 9), (9, 12)):
        log.append([envelope(signer, i) for i in range(*batch)])
    return log


def kinds(report) -> list[tuple[int | None, str]]:
    return [(p.index, p.kind) for p in report.problems]


def test_appends_land_in_order_under_a_signed_checkpoint(keys, log):
    """Each batch gets consecutive indices and one checkpoint; a clean log verifies with every signature."""
    appended = log.append([envelope(keys.signer(), i) for i in range(12, 15)])
    assert list(appended.indices) == [12, 13, 14]
    assert appended.checkpoint.size == 15 and appended.checkpoint.root == log.root()
    assert log.checkpoints.size() == 4
    checkpoint, signers = open_checkpoint(appended.note, keys.trusted(), origin="factory.test/log")
    assert checkpoint.size == 15 and signers[0].keyid == keys.signer("log").keyid
    report = log.verify()
    assert report.ok and report.entries == report.covered == 15 and report.signatures_checked == 15


def test_inclusion_and_consistency_proofs_check_against_the_checkpoints(log):
    """Any entry can be proven in the latest tree, and an old checkpoint proven a prefix of the new one."""
    latest = log.latest()
    for index in (0, 6, 11):
        proof, entry = log.inclusion_proof(index)
        verify_inclusion(proof, leaf_hash(entry), latest.root)
    first = CheckpointRecord.from_bytes(log.checkpoints.read(0, 1)[0]).checkpoint
    verify_consistency(log.consistency_proof(first.size), first.root, latest.root)


def test_a_flipped_byte_is_reported_at_its_index(log):
    """Changing one byte of a logged envelope is found, and the report names that entry."""
    data = bytearray(log.entries.entries[6])
    data[len(data) // 2] ^= 0x20
    log.entries.entries[6] = bytes(data)
    report = log.verify()
    assert not report.ok
    assert {p.index for p in report.problems} == {6}
    assert "changed" in [p.kind for p in report.at(6)]


def test_reordered_entries_are_reported_with_both_indices(log):
    """Swapping two entries, each still validly signed, is found at both positions."""
    e = log.entries.entries
    e[2], e[8] = e[8], e[2]
    report = log.verify()
    assert kinds(report) == [(2, "reordered"), (8, "reordered")]
    assert "logged at index 8" in report.at(2)[0].detail


def test_a_removed_entry_is_reported_once_at_its_index(log):
    """Deleting an entry from the middle names that index, not every entry that moved up after it."""
    del log.entries.entries[4]
    assert kinds(log.verify()) == [(4, "removed")]


def test_truncation_is_reported_where_the_log_now_ends(log):
    """Cutting the tail off the log names the first missing index and how many the checkpoints prove."""
    del log.entries.entries[9:]
    report = log.verify()
    assert kinds(report) == [(9, "truncated")]
    assert "prove 12" in report.problems[0].detail


def test_a_signature_by_an_untrusted_key_is_reported_at_its_index(tmp_path, keys, log):
    """An attestation appended with a key nobody trusts is logged, and verification names its index."""
    stranger = KeyRing(tmp_path / "stranger").signer()
    log.append([envelope(stranger, 99)])
    report = log.verify()
    assert kinds(report) == [(12, "untrusted-key")]


def test_a_tampered_checkpoint_is_reported_and_refuses_further_appends(keys, log):
    """A checkpoint record whose leaves were edited does not verify, and nobody can append on top of it."""
    records = log.checkpoints.entries
    raw = json.loads(records[-1])
    raw["leaves"] = raw["leaves"][:-4] + ("AAAA" if raw["leaves"][-4:] != "AAAA" else "BBBB")
    records[-1] = json.dumps(raw).encode()
    report = log.verify()
    assert [(p.record, p.kind) for p in report.problems if p.index is None] == [(2, "checkpoint-inconsistent")]
    assert report.covered == 9
    with pytest.raises(VerificationError, match="tampered"):
        log.append([envelope(keys.signer(), 50)])


def test_a_receipt_skips_signatures_already_checked_unless_a_key_was_revoked(keys, log):
    """A second verification re-checks only new entries; revoking a key makes it check everything again."""
    receipts = Receipts(keys)
    assert log.verify(receipts=receipts).signatures_checked == 12
    log.append([envelope(keys.signer(), 20)])
    again = log.verify(receipts=receipts)
    assert again.ok and (again.signatures_checked, again.signatures_skipped) == (1, 12)
    flipped = bytearray(log.entries.entries[3])
    flipped[-10] ^= 1
    log.entries.entries[3] = bytes(flipped)
    tampered = log.verify(receipts=receipts)
    assert (3, "changed") in kinds(tampered) and tampered.signatures_checked >= 1
    log.entries.entries[3] = bytes(flipped[:-10]) + bytes([flipped[-10] ^ 1]) + bytes(flipped[-9:])
    keys.revoke(keys.signer().keyid)
    reopened = TransparencyLog(log.entries, log.checkpoints, origin=log.origin, trust=keys.trusted())
    revoked = reopened.verify(receipts=receipts)
    assert revoked.signatures_checked == 13 and {p.kind for p in revoked.problems} == {"revoked-key"}


def test_a_rolled_back_log_is_caught_by_the_receipt(keys, log):
    """If the log and its checkpoints are both cut back, this verifier's receipt still shows it."""
    receipts = Receipts(keys)
    assert log.verify(receipts=receipts).ok
    del log.entries.entries[9:]
    del log.checkpoints.entries[2:]
    assert kinds(log.verify(receipts=receipts)) == [(9, "rolled-back")]


def test_large_logs_verify_in_a_process_pool_with_the_same_findings(keys):
    """Past the pool threshold the check runs over processes and still names the tampered entry."""
    log = memory_log(keys)
    signer = keys.signer()
    log.append([envelope(signer, i) for i in range(2100)])
    log.entries.entries[1500] = envelope(KeyRing(keys.path.parent / "stranger").signer(), 1500).to_json()
    report = log.verify(workers=2)
    assert {(p.index, p.kind) for p in report.problems} == {(1500, "changed"), (1500, "untrusted-key")}
    assert report.signatures_checked == 2100


def test_only_envelopes_can_be_appended_and_only_with_the_log_key(keys):
    """Appending bytes that are not an envelope, or without the log key, is refused up front."""
    log = memory_log(keys)
    with pytest.raises(VerificationError, match="not a DSSE envelope"):
        log.append([b"hello"])
    reader = TransparencyLog(log.entries, log.checkpoints, origin=log.origin, trust=log.trust)
    with pytest.raises(InvalidInputError, match="log key"):
        reader.append([envelope(keys.signer())])


def test_catalog_storage_round_trips_entries(store):
    """The log kept in the catalog hands back exactly the bytes appended, in order."""
    storage = CatalogLogStorage(store.catalog, "attestations")
    assert storage.append([b"a", b"bb"]) == 0
    assert storage.append([b"ccc"]) == 2
    assert storage.size() == 3
    assert storage.read(0, 3) == [b"a", b"bb", b"ccc"]


def test_racing_writers_leave_overlapping_checkpoints_that_still_verify(keys):
    """Two writers that both extend the same checkpoint sign overlapping records; the log still verifies."""
    log = memory_log(keys)
    signer = keys.signer()
    log.append([envelope(signer, i) for i in range(5)])
    seen_by_late_writer = list(log.checkpoints.entries)
    log.append([envelope(signer, i) for i in range(5, 8)])
    log.entries.append([envelope(signer, i).to_json() for i in range(8, 10)])
    records = log.checkpoints.entries
    log.checkpoints.entries = seen_by_late_writer  # the late writer read the log before the first one's record
    late = log.checkpoint()
    log.checkpoints.entries = records + [late.to_bytes()]
    assert late.start == 5 and late.checkpoint.size == 10
    report = log.verify()
    assert report.ok and report.covered == 10 and report.checkpoints == 3
    assert log.inclusion_proof(9)[0].size == 10


def test_parallel_verification_works_from_a_script_piped_to_python(tmp_path):
    """A driver piped to 'python -' can verify a large log over processes (spawn used to re-import '<stdin>')."""
    code = f"""
from gates_kit import envelope, memory_log
from factory.gates import KeyRing
keys = KeyRing({str(tmp_path / 'keys')!r})
log = memory_log(keys)
log.append([envelope(keys.signer(), i) for i in range(2100)])
report = log.verify(workers=2)
print(report.ok, report.signatures_checked)
"""
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[2]), str(here.parents[1])])}
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, env=env, timeout=600)
    assert out.stdout.split() == ["True", "2100"], out.stderr[-2000:]
