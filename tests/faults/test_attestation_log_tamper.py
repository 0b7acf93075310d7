"""The transparency log in the catalog, tampered with through SQL: `factory attest verify` names each index."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from factory.gates import KeyRing, attestation_log
from factory.runtime._cli_gates_log import attest_app

from gates_kit import envelope, gated_store

EXE = os.path.join(os.path.dirname(sys.executable), "factory")
ENTRIES = 12


@pytest.fixture
def store(tmp_path):
    """A store whose log holds 12 real attestations, appended in three batches (three checkpoints)."""
    store = gated_store(tmp_path)
    log = attestation_log(store, writer=True)
    signer = KeyRing(store.settings.keys).signer("attestation")
    for start in range(0, ENTRIES, 4):
        log.append([envelope(signer, i) for i in range(start, start + 4)])
    return store


def sql(store, statement: str, *args) -> None:
    with sqlite3.connect(store.catalog.location) as db:
        db.execute(statement, args)


def entry(store, index: int) -> bytes:
    with sqlite3.connect(store.catalog.location) as db:
        return bytes(db.execute("SELECT entry FROM log_entries WHERE log='attestations' AND idx=?",
                                (index,)).fetchone()[0])


def verify(store, *args: str) -> tuple[int, dict]:
    env = {"FACTORY_KEYS": store.settings.keys, "FACTORY_ACTOR": "auditor"}
    result = CliRunner().invoke(attest_app, ["verify", "--home", store.home, "--json", *args], env=env)
    return result.exit_code, json.loads(result.output)


def problems(store) -> list[tuple[int | None, str]]:
    code, report = verify(store, "--full")
    assert code == (1 if report["problems"] else 0)
    return [(p["index"], p["kind"]) for p in report["problems"]]


def test_an_untouched_log_verifies(store):
    """Twelve entries under three checkpoints: every signature checked, no problem, exit 0."""
    code, report = verify(store)
    assert code == 0 and report["ok"] and (report["entries"], report["checkpoints"], report["covered"]) == (12, 3, 12)
    assert report["signatures_checked"] == 12


def test_a_flipped_byte_in_an_envelope_is_reported_at_its_index(store):
    """One byte of entry 5 changed in the catalog's table: reported as changed, at 5 only."""
    data = bytearray(entry(store, 5))
    data[len(data) // 2] ^= 0x04
    sql(store, "UPDATE log_entries SET entry=? WHERE log='attestations' AND idx=5", bytes(data))
    found = problems(store)
    assert {i for i, _ in found} == {5} and (5, "changed") in found


def test_two_swapped_entries_are_reported_at_both_indices(store):
    """Entries 2 and 7 swapped (each still validly signed): both reported as reordered."""
    two, seven = entry(store, 2), entry(store, 7)
    sql(store, "UPDATE log_entries SET entry=? WHERE log='attestations' AND idx=2", seven)
    sql(store, "UPDATE log_entries SET entry=? WHERE log='attestations' AND idx=7", two)
    assert problems(store) == [(2, "reordered"), (7, "reordered")]


def test_a_truncated_log_is_reported_where_it_now_ends(store):
    """Rows from index 9 on deleted (and the head shrunk to match): truncated, at 9."""
    sql(store, "DELETE FROM log_entries WHERE log='attestations' AND idx >= 9")
    sql(store, "UPDATE log_heads SET size=9 WHERE log='attestations'")
    assert problems(store) == [(9, "truncated")]


def test_one_deleted_entry_is_reported_once_at_its_index(store):
    """Row 4 deleted from the middle: removed, at 4, not every entry after it."""
    sql(store, "DELETE FROM log_entries WHERE log='attestations' AND idx=4")
    assert problems(store) == [(4, "removed")]


def test_an_envelope_signed_by_an_untrusted_key_is_reported_at_its_index(store, tmp_path):
    """An attestation signed by a key nobody trusts, slipped in as row 12: untrusted key, at 12."""
    stranger = KeyRing(tmp_path / "stranger").signer()
    sql(store, "INSERT INTO log_entries(log, idx, entry) VALUES ('attestations', 12, ?)",
        envelope(stranger, 99).to_json())
    sql(store, "UPDATE log_heads SET size=13 WHERE log='attestations'")
    code, report = verify(store)
    assert code == 1 and [(p["index"], p["kind"]) for p in report["problems"]] == [(12, "untrusted-key")]
    assert report["uncovered"] == 1  # and no signed checkpoint vouches for it


def test_a_tampered_checkpoint_is_reported_by_record(store):
    """A checkpoint record's signed note edited in the catalog: that record fails its signature check (and the
    record built on it no longer connects to what the others prove)."""
    with sqlite3.connect(store.catalog.location) as db:
        raw = json.loads(db.execute("SELECT entry FROM log_entries WHERE log='attestations.checkpoints' AND idx=1")
                         .fetchone()[0])
        raw["note"] = raw["note"].replace("\n8\n", "\n9\n", 1)
        db.execute("UPDATE log_entries SET entry=? WHERE log='attestations.checkpoints' AND idx=1",
                   (json.dumps(raw).encode(),))
    code, report = verify(store)
    assert code == 1
    assert [(p["record"], p["kind"]) for p in report["problems"] if p["index"] is None] == [
        (1, "checkpoint-signature"), (2, "checkpoint-inconsistent")]


def test_the_command_exits_1_and_prints_each_problem_with_its_index(store):
    """Through the installed command, as an auditor runs it: exit 1, the index and kind on screen."""
    sql(store, "DELETE FROM log_entries WHERE log='attestations' AND idx=4")
    env = {**os.environ, "FACTORY_KEYS": store.settings.keys, "COLUMNS": "200"}
    done = subprocess.run([EXE, "attest", "verify", "--home", store.home], capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stderr
    assert "removed" in done.stdout and "the entry logged at index 4 is no longer in the log" in done.stdout
