"""`factory store verify` has no blind spots: missing and unreadable objects are reported, not only corrupt ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from factory.contract import Contract, default_registry, package

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def verify(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "store", "verify", "--home", str(home), *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"})


def problems(home) -> list[tuple[str, str, str]]:
    res = verify(home, "--json")
    report = json.loads(res.stdout)
    assert res.returncode == (1 if report["problems"] else 0)
    return [(p["what"], p["problem"], p["digest"]) for p in report["problems"]]


def test_a_deleted_blob_that_the_catalog_references_is_missing(store):
    """A put blob whose file was deleted: verify reports it missing and exits 1 (it used to say 'none corrupt')."""
    blob = store.put_blob(b"precious rows", name="raw.csv")
    os.remove(store.blobs.path(blob.digest))
    assert problems(store.home) == [("content blob", "missing", blob.digest)]
    res = verify(store.home)
    assert res.returncode == 1 and "missing" in res.stdout and "none corrupt" not in res.stdout


def test_a_missing_artifact_record_is_reported(store):
    """An artifact whose record blob is gone is reported missing, with the artifact it belonged to."""
    config = store.artifacts.add("training-config", metadata={"lr": 0.1}, name="cfg")
    record = store.catalog.artifact(config.digest).record_digest
    os.remove(store.blobs.path(record))
    found = problems(store.home)
    assert found == [("artifact record", "missing", record)]
    assert config.digest in verify(store.home).stdout


def test_a_folder_where_a_blob_should_be_is_unreadable(store):
    """A folder standing at a blob's path is reported unreadable (it used to be skipped silently)."""
    blob = store.put_blob(b"rows")
    path = store.blobs.path(blob.digest)
    os.remove(path)
    os.mkdir(path)
    assert problems(store.home) == [("blob", "unreadable", blob.digest)]
    assert store.blobs.verify(blob.digest).problem == "unreadable"


@pytest.mark.parametrize("thing", ["fifo", "link"])
def test_a_fifo_or_link_where_a_blob_should_be_is_unreadable(store, replace_with_non_file, thing):
    """A FIFO or a link standing at a blob's path is reported unreadable, not waited on nor followed."""
    blob = store.put_blob(b"rows" * 100)
    replace_with_non_file(store.blobs.path(blob.digest), thing)
    assert problems(store.home) == [("blob", "unreadable", blob.digest)]
    assert "not a regular file" in verify(store.home).stdout


def _tree(store, tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "shard").mkdir(parents=True)
    (folder / "latest").write_bytes(b"step 10")
    (folder / "shard" / "weights.bin").write_bytes(os.urandom(4096))
    return store.trees.put(folder, name="ckpt")


def test_a_deleted_file_of_a_tree_is_reported_missing(store, tmp_path):
    """Deleting the blob of one file of a tree is reported as a missing content blob of that tree."""
    tree = _tree(store, tmp_path)
    weights = store.trees.manifest(tree.digest).files["shard/weights.bin"].digest
    os.remove(store.blobs.path(weights))
    assert problems(store.home) == [("content blob", "missing", weights)]
    assert tree.digest in verify(store.home).stdout


def test_a_corrupt_file_of_a_tree_and_a_lost_manifest_are_reported(store, tmp_path):
    """A flipped byte in a tree's file is corrupt; a tree whose manifest blob is gone is missing its content."""
    tree = _tree(store, tmp_path)
    latest = store.trees.manifest(tree.digest).files["latest"].digest
    with open(store.blobs.path(latest), "r+b") as f:
        f.write(b"X")
    assert problems(store.home) == [("blob", "corrupt", latest)]
    os.remove(store.blobs.path(tree.digest))
    assert sorted(problems(store.home)) == sorted([("blob", "corrupt", latest), ("content blob", "missing", tree.digest)])


def test_a_missing_file_of_a_model_package_is_reported(store):
    """Deleting the weights blob of a packaged model is reported as a missing content blob."""
    config = {"in_features": 4, "out_features": 3, "hidden": [8]}
    sig = default_registry().get("mlp-classifier").expected(config)
    pkg = package(store, default_registry().build("mlp-classifier", config, seed=0),
                  Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs))
    weights = pkg.artifact.metadata["files"]["model.safetensors"]
    os.remove(store.blobs.path(weights))
    assert problems(store.home) == [("content blob", "missing", weights)]


def test_missing_and_corrupt_are_counted_apart(store):
    """One blob corrupt and one missing: both listed, each with its own problem."""
    a = store.put_blob(b"a" * 1000)
    b = store.put_blob(b"b" * 1000)
    with open(store.blobs.path(a.digest), "r+b") as f:
        f.write(b"X")
    os.remove(store.blobs.path(b.digest))
    assert sorted(problems(store.home)) == sorted([("blob", "corrupt", a.digest), ("content blob", "missing", b.digest)])
    text = verify(store.home).stdout
    assert "1 corrupt of 3 blobs, 1 missing" in text


@pytest.mark.parametrize("make", ["absent", "file"])
def test_a_home_that_is_not_a_store_is_an_error(tmp_path, make):
    """`verify --home /no/such/place` exits 2 with one line naming it, and creates nothing there."""
    home = tmp_path / "nowhere"
    if make == "file":
        home.write_text("not a store")
    res = verify(home)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(home) in lines[0] and lines[0].startswith("error: ")
    assert (not home.exists()) if make == "absent" else home.read_text() == "not a store"


def test_a_clean_store_verifies_and_says_what_it_checked(store):
    """A store with blobs, a dataset and records: exit 0, and the counts of what was checked."""
    import pyarrow as pa

    store.put_blob(b"raw")
    store.datasets.add(pa.table({"id": [1, 2]}), name="d")
    res = verify(store.home, "--json")
    assert res.returncode == 0, res.stdout
    report = json.loads(res.stdout)
    assert report["ok"] and report["blobs"] >= 3 and report["artifacts"] == 2 and report["dataset_files"] >= 2


def test_verify_of_a_home_with_blobs_only_creates_no_catalog(tmp_path):
    """A home holding blobs but no catalog is not silently given a new, empty one: verify says which
    catalog to point at (or how to start one) and creates no catalog file."""
    from factory.store.blobs import BlobStore

    home = tmp_path / "home"
    BlobStore(home / "blobs").put(b"x")  # a bare blob store: a Store would claim the home in a new catalog
    res = verify(home)
    assert res.returncode == 2 and "already holds data" in res.stderr and "factory init" in res.stderr, res
    assert "Traceback" not in res.stderr
    assert not (home / "catalog.db").exists()
    shutil.rmtree(home)
