"""Blob store: content addressing, atomic idempotent writes, verified reads."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError
from factory.store import BlobStore


@pytest.fixture
def blobs(tmp_path):
    return BlobStore(tmp_path / "blobs")


def _flip_byte(path: str, offset: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_put_returns_sha256_of_content_for_bytes_file_and_stream(blobs, tmp_path):
    """The same content gives the same digest whether put as bytes, a file or a stream."""
    data = os.urandom(3 * (4 << 20) + 123)  # spans several streaming chunks
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert blobs.put(data) == expected
    assert blobs.put(path) == expected
    assert blobs.put(io.BytesIO(data)) == expected
    assert blobs.get(expected) == data


def test_blob_lives_under_its_hash_prefix(blobs):
    """A blob sits at <root>/<d[:2]>/<d>, where other tools can find it."""
    digest = blobs.put(b"hello")
    hexd = digest.removeprefix("sha256:")
    assert blobs.path(digest) == f"{blobs.root}/{hexd[:2]}/{hexd}"
    assert open(blobs.path(digest), "rb").read() == b"hello"


def test_existing_blob_is_not_rewritten(blobs, tmp_path):
    """Putting content that is already stored leaves the stored file untouched."""
    digest = blobs.put(b"x" * 1000)
    before = os.stat(blobs.path(digest))
    path = tmp_path / "again"
    path.write_bytes(b"x" * 1000)
    assert blobs.put(path) == digest
    after = os.stat(blobs.path(digest))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert os.listdir(f"{blobs.root}/tmp") == []


def test_flipped_byte_is_caught_by_get_and_verify(blobs, tmp_path):
    """A corrupted blob is never handed out: get raises naming digest and location."""
    good = blobs.put(b"intact content")
    digest = blobs.put(b"some important content" * 100)
    _flip_byte(blobs.path(digest), 7)
    with pytest.raises(CorruptBlobError) as info:
        blobs.get(digest)
    assert digest in str(info.value) and blobs.path(digest) in str(info.value)
    assert info.value.digest == digest
    dest = tmp_path / "out.bin"
    with pytest.raises(CorruptBlobError):
        blobs.get_to(digest, dest)
    assert not dest.exists() and list(tmp_path.glob(".out.bin*")) == []
    bad = blobs.verify_all()
    assert [b.digest for b in bad] == [digest]
    assert blobs.get(good) == b"intact content"


def test_get_to_streams_verified_copy(blobs, tmp_path):
    """get_to writes exactly the stored bytes and reports progress."""
    data = os.urandom(9 << 20)
    digest = blobs.put(data)
    seen = []
    out = blobs.get_to(digest, tmp_path / "sub" / "copy.bin", progress=seen.append)
    assert out.read_bytes() == data and sum(seen) == len(data)


def test_unknown_and_malformed_digests_are_clear_errors(blobs):
    """A digest that is not stored, or not a digest at all, says what is wrong."""
    with pytest.raises(NotFoundError, match="no blob"):
        blobs.get("sha256:" + "0" * 64)
    with pytest.raises(InvalidInputError, match="64 lowercase hex"):
        blobs.get("md5:abc")


def test_put_missing_file_writes_nothing(blobs, tmp_path):
    """A missing source path is a user error and leaves the store empty."""
    with pytest.raises(InvalidInputError, match="no such file"):
        blobs.put(tmp_path / "nope.bin")
    assert list(blobs.digests()) == []


def test_digests_lists_blobs_but_not_temporaries(blobs):
    """Leftover temporary files of dead writers are invisible and can be cleaned."""
    d1, d2 = blobs.put(b"a"), blobs.put(b"b")
    with open(f"{blobs.root}/tmp/dead-writer.part", "wb") as f:
        f.write(b"partial")
    assert sorted(blobs.digests()) == sorted([d1, d2])
    assert blobs.clean_tmp(older_than_s=-1) == 1


def test_file_uri_root_goes_through_pyarrow_fs(tmp_path):
    """A URI root is resolved by pyarrow.fs; the same layout and digests result."""
    uri_store = BlobStore(f"file://{tmp_path}/uri-root")
    digest = uri_store.put(b"via uri")
    assert uri_store.get(digest) == b"via uri"
    assert (tmp_path / "uri-root" / digest[7:9] / digest[7:]).read_bytes() == b"via uri"


class _FailingStream:
    """A source that breaks after a few chunks, like a network read dropping."""

    def __init__(self):
        self.calls = 0

    def read(self, n: int) -> bytes:
        self.calls += 1
        if self.calls > 3:
            raise OSError("connection reset")
        return b"q" * n


def test_failed_source_leaves_no_blob_and_no_temporary(blobs):
    """A read error mid-stream surfaces to the caller; nothing partial stays behind."""
    with pytest.raises(OSError, match="connection reset"):
        blobs.put(_FailingStream())
    assert list(blobs.digests()) == []
    assert os.listdir(f"{blobs.root}/tmp") == []


def test_failed_progress_callback_stops_the_put_cleanly(blobs):
    """An exception from the caller's progress callback stops the pipeline without hanging."""
    def progress(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        blobs.put(io.BytesIO(os.urandom(50 << 20)), progress=progress)
    assert list(blobs.digests()) == []


def test_a_staged_blob_is_invisible_until_committed(blobs, tmp_path):
    """Staging writes in the background; only commit makes the blob appear, under its digest."""
    from factory.store import HashingReader

    data = os.urandom(9 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    staged = blobs.stage(HashingReader.open(path))
    assert list(blobs.digests()) == []
    written: list[int] = []
    digest = blobs.put(staged, progress=written.append)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blobs.get(digest) == data
    assert sum(written) == len(data)
    assert os.listdir(f"{blobs.root}/tmp") == []


def test_an_aborted_staged_blob_leaves_nothing(blobs, tmp_path):
    """Abort stops the write and removes the temporary file; no blob appears."""
    from factory.store import HashingReader

    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(9 << 20))
    staged = blobs.stage(HashingReader.open(path, chunk=1 << 20, buffers=2))
    staged.abort()
    assert list(blobs.digests()) == []
    assert os.listdir(f"{blobs.root}/tmp") == []
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        staged.commit()


def test_a_blob_staged_in_one_store_cannot_be_committed_to_another(blobs, tmp_path):
    """Committing elsewhere would publish into the wrong root; it is refused and nothing moves."""
    from factory.store import HashingReader

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    staged = blobs.stage(HashingReader.open(path))
    other = BlobStore(tmp_path / "other")
    with pytest.raises(ValueError, match="cannot be committed"):
        other.put(staged)
    staged.abort()
    assert list(other.digests()) == [] and list(blobs.digests()) == []


def test_a_large_blob_of_odd_size_round_trips_through_direct_writes(blobs, tmp_path):
    """A blob big enough to bypass the page cache, with a tail that direct I/O cannot write, comes back intact."""
    from factory.store.blobs import DIRECT_MIN

    data = os.urandom(DIRECT_MIN + (1 << 20) + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = blobs.put(path)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blobs.get(digest) == data
    assert blobs.get_to(digest, tmp_path / "copy.bin").read_bytes() == data
    assert blobs.put(data) == digest  # as bytes: the same blob, found intact
    assert os.listdir(f"{blobs.root}/tmp") == []


def test_a_filesystem_without_direct_io_still_stores_large_blobs(blobs, tmp_path, monkeypatch):
    """Where opening with O_DIRECT is refused (tmpfs on older kernels, some FUSE mounts), puts fall back."""
    import errno

    from factory.store.blobs import DIRECT_MIN

    real_open = os.open

    def no_direct(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_direct)
    data = os.urandom(DIRECT_MIN + 4096)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = blobs.put(path)
    assert blobs.get(digest) == data
    assert blobs.get_to(digest, tmp_path / "copy.bin").read_bytes() == data


def test_a_folder_where_a_blob_belongs_is_named(blobs):
    """A put that finds a folder in its blob's place says so instead of failing obscurely."""
    data = b"content" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    os.makedirs(blobs.path(digest))
    with pytest.raises(CorruptBlobError, match="a folder stands where blob"):
        blobs.put(data)


@pytest.mark.parametrize("thing", ["fifo", "link"])
def test_a_fifo_or_link_in_a_blobs_place_is_corrupt_not_a_hang(blobs, tmp_path, thing):
    """Reading a blob whose file was replaced by a FIFO or a link fails at once as corrupt, and a put repairs it."""
    digest = blobs.put(b"payload" * 100)
    path = blobs.path(digest)
    os.unlink(path)
    if thing == "fifo":
        os.mkfifo(path)
    else:
        (tmp_path / "elsewhere").write_bytes(b"payload" * 100)
        os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(CorruptBlobError, match="not a regular file"):
        blobs.get(digest)
    assert blobs.verify(digest).reason == "not a regular file"
    assert blobs.put(b"payload" * 100) == digest  # a put repairs it
    assert blobs.get(digest) == b"payload" * 100
