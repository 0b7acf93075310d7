"""External artifacts: files outside the store, recorded by location, size, SHA-256 and time."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from factory.errors import InvalidInputError


def test_a_file_is_recorded_by_location_size_hash_and_time_without_copying(store, tmp_path):
    """Recording an input hashes it in place; the bytes stay outside the store unless asked."""
    path = tmp_path / "rows.csv"
    path.write_bytes(b"id,amount\n1,2\n")
    art = store.add_external(path)
    meta = art.metadata
    assert art.kind == "external" and art.name == "rows.csv"
    assert meta["uri"] == f"file://{socket.gethostname()}{path}"
    assert meta["size"] == 14 and meta["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["mtime"].endswith("+00:00") and "blob" not in meta
    assert not store.blobs.exists(meta["sha256"])
    assert store.add_external(path).digest == art.digest  # unchanged: the same artifact
    path.write_bytes(b"id,amount\n1,3\n")
    os.utime(path, (1, 1))
    assert store.add_external(path).digest != art.digest
    assert store.artifacts.find("external", where={"sha256": meta["sha256"]}) == [art]


def test_copy_stores_the_bytes_too(store, tmp_path):
    """With copy=True the input is also a verified blob in the store."""
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(1000))
    art = store.add_external(path, copy=True)
    assert store.blobs.get(art.metadata["blob"]) == path.read_bytes()


def test_a_missing_input_is_refused_and_writes_nothing(store, tmp_path):
    """Naming a file that is not there is a clear error, and the store stays empty."""
    with pytest.raises(InvalidInputError, match="no such file"):
        store.add_external(tmp_path / "missing.csv")
    assert not (tmp_path / "home" / "catalog.db").exists()
