"""A corrupt blob is repaired by putting the original again (issue 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from factory.settings import Settings

FACTORY = os.path.join(os.path.dirname(sys.executable), "factory")


def _factory(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FACTORY, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_putting_the_original_again_repairs_a_corrupt_blob(tmp_path, damage):
    """After `truncate -s 2 BLOB` (or a flipped byte), `store put ORIGINAL` repairs it and `store get` works."""
    from factory.store import Store

    home = tmp_path / "home"
    original = tmp_path / "original.bin"
    data = os.urandom(3 << 20)
    original.write_bytes(data)
    put = _factory("store", "put", str(original), "--home", str(home))
    assert put.returncode == 0, put.stderr
    digest = put.stdout.strip()
    blob = Store(home, settings=Settings(home=str(home))).blobs.path(digest)
    if damage == "truncate":
        os.truncate(blob, 2)
    else:
        with open(blob, "r+b") as f:
            f.seek(1000)
            f.write(bytes([data[1000] ^ 0xFF]))
    broken = _factory("store", "get", digest, "-o", str(tmp_path / "broken.bin"), "--home", str(home))
    assert broken.returncode == 1 and "corrupt" in broken.stderr

    again = _factory("store", "put", str(original), "--home", str(home))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == digest
    out = tmp_path / "back.bin"
    got = _factory("store", "get", digest, "-o", str(out), "--home", str(home))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    assert os.listdir(home / "blobs" / "tmp") == []


def test_put_bytes_repairs_a_truncated_blob(tmp_path):
    """The in-process put of bytes (artifact records, package files) repairs a damaged copy too."""
    from factory.store import BlobStore

    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put(b"record" * 1000)
    os.truncate(blobs.path(digest), 2)
    assert blobs.put(b"record" * 1000) == digest
    assert blobs.get(digest) == b"record" * 1000
