"""Dataset rows are tamper-evident: a changed, missing or replaced Lance file is caught on read and by verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from factory.errors import CorruptBlobError
from factory.store.datasets import DatasetMeta

EXE = os.path.join(os.path.dirname(sys.executable), "factory")
ROWS = pa.table({"id": [1, 2, 3], "name": ["alpha", "bravo", "charlie"]})


def verify(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "store", "verify", "--home", str(home), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"})


def _data_file_holding(v, text: bytes) -> Path:
    files = [Path(v.uri) / p for p in v.files if p.startswith("data/")]
    holding = [f for f in files if text in f.read_bytes()]
    assert len(holding) == 1, files
    return holding[0]


def _replace_in(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    path.write_bytes(data.replace(old, new))


def test_every_file_a_version_reads_is_recorded_with_its_hash(store):
    """A version's record lists the SHA-256 of its manifest and data files (and deletion files once rows go)."""
    v1 = store.datasets.add(ROWS, name="d", key=["id"])
    assert v1.files and any(p.startswith("_versions/") for p in v1.files)
    assert any(p.startswith("data/") for p in v1.files)
    assert all(d.startswith("sha256:") and len(d) == 71 for d in v1.files.values())
    v2 = store.datasets.add(ROWS.slice(0, 2), name="d")
    assert any(p.startswith("_deletions/") for p in v2.files)
    shared = set(v1.files) & set(v2.files)
    assert shared and all(v1.files[p] == v2.files[p] for p in shared)
    recorded = store.artifacts.get(v2.digest).meta(DatasetMeta).files
    assert recorded == dict(v2.files)


def test_a_changed_value_in_a_data_file_is_an_error_naming_the_file(store):
    """'bravo' changed to 'BRAVO' inside the Lance data file: reading the version fails and names that file."""
    v = store.datasets.add(ROWS, name="d", key=["id"])
    assert store.datasets.read("d").column("name").to_pylist() == ["alpha", "bravo", "charlie"]
    path = _data_file_holding(v, b"bravo")
    _replace_in(path, b"bravo", b"BRAVO")
    with pytest.raises(CorruptBlobError, match=path.name) as info:
        store.datasets.read("d")
    assert "corrupt" in str(info.value) and info.value.digest == v.digest
    with pytest.raises(CorruptBlobError, match=path.name):
        store.datasets.lance("d@1")


def test_verify_reports_the_tampered_file_and_deep_reports_the_rows(store):
    """`store verify` lists the changed data file (exit 1); `--deep` also says the rows no longer hash to the version."""
    v = store.datasets.add(ROWS, name="d", key=["id"])
    assert verify(store.home).returncode == 0
    path = _data_file_holding(v, b"bravo")
    _replace_in(path, b"bravo", b"BRAVO")
    res = verify(store.home, "--json")
    assert res.returncode == 1
    problems = json.loads(res.stdout)["problems"]
    assert [(p["what"], p["problem"], p["digest"]) for p in problems] == [("dataset file", "corrupt", v.digest)]
    assert problems[0]["location"].endswith(path.name)
    deep = json.loads(verify(store.home, "--deep", "--json").stdout)
    assert {(p["what"], p["problem"]) for p in deep["problems"]} == {("dataset file", "corrupt"),
                                                                       ("dataset content", "corrupt")}
    text = verify(store.home)
    assert text.returncode == 1 and path.name in text.stdout


@pytest.mark.parametrize("prefix", ["_versions/", "data/", "_deletions/"])
def test_a_missing_file_of_a_version_is_an_error_naming_it(store, prefix):
    """A deleted manifest, data or deletion file: reading fails naming it as missing, and verify exits 1."""
    store.datasets.add(ROWS, name="d", key=["id"])
    v = store.datasets.add(ROWS.slice(0, 2), name="d")
    victim = next(p for p in sorted(v.files) if p.startswith(prefix))
    (Path(v.uri) / victim).unlink()
    with pytest.raises(CorruptBlobError, match="missing"):
        store.datasets.read("d")
    res = verify(store.home, "--json")
    assert res.returncode == 1
    assert {(p["what"], p["problem"]) for p in json.loads(res.stdout)["problems"]} == {("dataset file", "missing")}


def test_an_older_version_is_checked_with_its_own_files(store):
    """Tampering with a file only version 1 reads breaks version 1, not version 2."""
    v1 = store.datasets.add(ROWS, name="d", key=["id"])
    v2 = store.datasets.add(pa.table({"id": [7], "name": ["zulu"]}), name="d")
    only_v1 = sorted(set(v1.files) - set(v2.files))
    path = Path(v1.uri) / next(p for p in only_v1 if p.startswith("_versions/"))
    path.write_bytes(path.read_bytes() + b"\0")
    assert store.datasets.read("d@2").num_rows == 1
    with pytest.raises(CorruptBlobError, match=path.name):
        store.datasets.read("d@1")


def _forget_file_hashes(store, digest: str) -> None:
    """Make a version look as an older factory wrote it: the same record with no file hashes."""
    from factory.store.catalog import IndexedArtifact

    entry = store.catalog.artifact(digest)
    record = json.loads(store.blobs.get(entry.record_digest))
    record["metadata"].pop("files")
    from factory.store import canonical_json

    record_digest = store.blobs.put_bytes(canonical_json(record))
    with store.catalog._connect(write=True) as db:
        db.execute("UPDATE artifacts SET record_digest=? WHERE digest=?", (record_digest, digest))
    assert store.catalog.artifact(digest) == IndexedArtifact(digest, entry.kind, entry.name, record_digest,
                                                             entry.created_at)


def test_versions_without_recorded_hashes_are_reported_as_not_verified(store):
    """A version written before file hashes existed still reads, and verify says it was not verified, exit 0."""
    v = store.datasets.add(ROWS, name="d", key=["id"])
    _forget_file_hashes(store, v.digest)
    assert store.datasets.get("d").files is None
    assert store.datasets.read("d").num_rows == 3
    res = verify(store.home)
    assert res.returncode == 0, res.stdout
    assert "not verified" in res.stdout and v.digest[:19] in res.stdout
    report = json.loads(verify(store.home, "--json").stdout)
    assert report["unverified"] == [v.digest] and report["problems"] == []


def test_deep_verify_catches_tampering_in_a_version_without_recorded_hashes(store):
    """With no hashes to compare, `verify --deep` still finds rows that no longer match the version's digest."""
    v = store.datasets.add(ROWS, name="d", key=["id"])
    _forget_file_hashes(store, v.digest)
    path = next(p for p in (Path(v.uri) / "data").iterdir() if b"bravo" in p.read_bytes())
    _replace_in(path, b"bravo", b"BRAVO")
    assert verify(store.home).returncode == 0
    res = verify(store.home, "--deep", "--json")
    assert res.returncode == 1
    assert [(p["what"], p["problem"]) for p in json.loads(res.stdout)["problems"]] == [("dataset content", "corrupt")]


def test_an_untouched_store_verifies_deep(store):
    """Several versions, deletions included: `verify --deep` re-hashes every file and every version's rows, exit 0."""
    store.datasets.add(ROWS, name="d", key=["id"])
    store.datasets.add(ROWS.slice(0, 2), name="d")
    store.datasets.add(pa.concat_tables([ROWS, pa.table({"id": [4], "name": ["delta"]})]), name="d")
    res = verify(store.home, "--deep", "--json")
    assert res.returncode == 0, res.stdout
    report = json.loads(res.stdout)
    assert report["deep_datasets"] == 3 and report["dataset_files"] >= 6 and report["unverified"] == []
