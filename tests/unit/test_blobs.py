"""Blob store: content addressing, atomic idempotent writes, verified reads.

Every test that takes ``blobs`` runs twice: on a local folder and on S3 (moto's server).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

import pytest
from pyarrow import fs as pafs

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError
from factory.store import BlobStore
from factory.store import _fs, _s3put


@pytest.fixture
def blobs(home_settings):
    return BlobStore(_fs.join(home_settings.home, "blobs"), settings=home_settings)


def _read(blobs: BlobStore, path: str) -> bytes:
    with blobs.fs.open_input_stream(path) as f:
        return f.read()


def _write(blobs: BlobStore, path: str, data: bytes) -> None:
    with blobs.fs.open_output_stream(path) as f:
        f.write(data)


def _flip_byte(blobs: BlobStore, path: str, offset: int = 0) -> None:
    data = bytearray(_read(blobs, path))
    data[offset] ^= 0xFF
    _write(blobs, path, bytes(data))


def _temporaries(blobs: BlobStore) -> list[str]:
    infos = blobs.fs.get_file_info(pafs.FileSelector(f"{blobs.root}/tmp", allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def _unfinished(blobs: BlobStore) -> list[str]:
    """Keys of the multipart uploads under the store that were neither completed nor aborted (S3 only)."""
    if not blobs.on_s3:
        return []
    pages = blobs.s3.client.get_paginator("list_multipart_uploads").paginate(
        Bucket=blobs.s3.bucket, Prefix=blobs._key(blobs.root) + "/")
    return [u["Key"] for page in pages for u in page.get("Uploads", [])]


def _written_at(blobs: BlobStore, digest: str):
    return blobs.fs.get_file_info(blobs.path(digest)).mtime


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
    assert _read(blobs, blobs.path(digest)) == b"hello"


def test_existing_blob_is_not_rewritten(blobs, tmp_path):
    """Putting content that is already stored leaves the stored file untouched."""
    digest = blobs.put(b"x" * 1000)
    before = _written_at(blobs, digest)
    if _fs.is_object_store(blobs.uri):
        time.sleep(1.1)  # object stores keep modification times to the second
    path = tmp_path / "again"
    path.write_bytes(b"x" * 1000)
    assert blobs.put(path) == digest
    assert _written_at(blobs, digest) == before
    assert _temporaries(blobs) == []


def test_flipped_byte_is_caught_by_get_and_verify(blobs, tmp_path):
    """A corrupted blob is never handed out: get raises naming digest and location."""
    good = blobs.put(b"intact content")
    digest = blobs.put(b"some important content" * 100)
    _flip_byte(blobs, blobs.path(digest), 7)
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
    _write(blobs, f"{blobs.root}/tmp/dead-writer.part", b"partial")
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
    assert _temporaries(blobs) == []


def test_failed_progress_callback_stops_the_put_cleanly(blobs):
    """An exception from the caller's progress callback stops the pipeline without hanging."""
    def progress(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        blobs.put(io.BytesIO(os.urandom(50 << 20)), progress=progress)
    assert list(blobs.digests()) == []
    assert _unfinished(blobs) == []


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
    assert _temporaries(blobs) == []


def test_an_aborted_staged_blob_leaves_nothing(blobs, tmp_path):
    """Abort stops the write and removes the temporary file; no blob appears."""
    from factory.store import HashingReader

    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(9 << 20))
    staged = blobs.stage(HashingReader.open(path, chunk=1 << 20, buffers=2))
    staged.abort()
    assert list(blobs.digests()) == []
    assert _temporaries(blobs) == []
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


class _PausingStream:
    """A source that stops midway until released, like a slow upload caught in the act."""

    def __init__(self, data: bytes, pause_at: int):
        self.source = io.BytesIO(data)
        self.pause_at = pause_at
        self.paused = threading.Event()
        self.release = threading.Event()

    def read(self, n: int) -> bytes:
        if self.source.tell() >= self.pause_at and not self.release.is_set():
            self.paused.set()
            self.release.wait(60)
        return self.source.read(n)


def test_a_put_in_progress_shows_nothing_under_its_digest(blobs):
    """Midway through a large put, no reader can see the blob, whole or partial; then it appears whole."""
    data = os.urandom(24 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    source = _PausingStream(data, pause_at=13 << 20)
    result: list[str] = []
    writer = threading.Thread(target=lambda: result.append(blobs.put(source)))
    writer.start()
    try:
        assert source.paused.wait(60)
        assert not blobs.exists(digest)
        assert list(blobs.digests()) == []
        with pytest.raises(NotFoundError):
            blobs.get(digest)
    finally:
        source.release.set()
        writer.join(60)
    assert result == [digest]
    assert blobs.size(digest) == len(data) and blobs.get(digest) == data
    assert _temporaries(blobs) == []


def test_an_upload_of_the_wrong_size_is_never_published(s3_settings):
    """Where a blob is published by copy (object stores other than S3), an upload of other than the hashed size never appears."""
    from factory.errors import FactorySystemError

    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    tmp = f"{blobs.root}/tmp/short.part"
    _write(blobs, tmp, b"only nine")
    final = blobs.path("sha256:" + "ab" * 32)
    with pytest.raises(FactorySystemError, match="nothing was published"):
        _fs.publish_object(blobs.fs, tmp, final, 10)
    assert blobs.fs.get_file_info(final).type == pafs.FileType.NotFound
    assert _temporaries(blobs) == []


class _OnceOnly(io.RawIOBase):
    """A stream that can be read only once, like a pipe or a socket."""

    def __init__(self, data: bytes):
        self.source = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.source.read(len(buf))
        buf[:len(data)] = data
        return len(data)


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 5 MiB (S3's smallest), one in flight: a few MiB take the paths of large blobs."""
    monkeypatch.setattr(_s3put, "PART", 5 << 20)
    monkeypatch.setattr(_s3put, "WINDOW", 5 << 20)


def _etag(s3_server, blobs: BlobStore, digest: str) -> str:
    bucket, key = blobs.path(digest).split("/", 1)
    return s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def test_a_stream_past_the_single_copy_limit_is_published_by_a_multipart_copy(s3_settings, s3_server, small_parts,
                                                                              monkeypatch):
    """A stream read once, larger than S3 copies in one request (5 GiB), is still published whole, in parts."""
    monkeypatch.setattr(_s3put, "SINGLE_COPY_LIMIT", 6 << 20)
    monkeypatch.setattr(_s3put, "COPY_PART", 5 << 20)
    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    data = os.urandom(12 << 20)
    digest = blobs.put(_OnceOnly(data))
    assert blobs.get(digest) == data
    assert _etag(s3_server, blobs, digest).endswith("-3")  # three ranges of at most 5 MiB
    assert _temporaries(blobs) == [] and _unfinished(blobs) == []


def test_a_large_file_goes_straight_to_its_key_on_s3(s3_settings, s3_server, small_parts, tmp_path):
    """A file is uploaded in parts to its final key, with no temporary object and no copy left behind."""
    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    data = os.urandom((12 << 20) + 7)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    seen: list[int] = []
    digest = blobs.put(path, progress=seen.append)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest() and blobs.get(digest) == data
    assert _etag(s3_server, blobs, digest).endswith("-3")  # made by the multipart upload itself
    assert sum(seen) == len(data)
    assert _temporaries(blobs) == [] and _unfinished(blobs) == []


def test_a_file_that_changes_while_it_is_stored_publishes_nothing(s3_settings, small_parts, tmp_path):
    """A file rewritten between hashing and uploading is refused: nothing appears under either digest."""
    from factory.errors import FactorySystemError

    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    original = os.urandom(40 << 20)
    path = tmp_path / "growing.bin"
    path.write_bytes(original)

    def rewrite_the_tail(n: int) -> None:  # runs once the first part is sent, long before the tail is read again
        with open(path, "r+b") as f:
            f.seek(-(1 << 20), os.SEEK_END)
            f.write(os.urandom(1 << 20))

    with pytest.raises(FactorySystemError, match="changed while it was being stored") as info:
        blobs.put(path, progress=rewrite_the_tail)
    assert "nothing was published" in str(info.value)
    assert list(blobs.digests()) == []
    assert not blobs.exists("sha256:" + hashlib.sha256(original).hexdigest())
    assert _unfinished(blobs) == [] and _temporaries(blobs) == []


def test_a_small_stream_is_written_once_at_its_key(s3_settings, s3_server):
    """A stream shorter than a part is held in memory and written with one conditional put; a second put rewrites nothing."""
    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    data = os.urandom(3 << 20)
    digest = blobs.put(_OnceOnly(data))
    before = _written_at(blobs, digest)
    time.sleep(1.1)  # object stores keep modification times to the second
    assert blobs.put(_OnceOnly(data)) == digest and blobs.put(data) == digest
    assert _written_at(blobs, digest) == before and blobs.get(digest) == data
    assert _temporaries(blobs) == [] and _unfinished(blobs) == []


def test_a_wrong_size_object_at_the_key_is_reported_not_accepted(s3_settings, s3_server):
    """If something of another size already sits where a blob belongs, the put says it is corrupt instead of succeeding."""
    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    data = b"the real content" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _write(blobs, blobs.path(digest), b"impostor")
    with pytest.raises(CorruptBlobError, match="holds 8 bytes") as info:
        blobs.put(data)
    assert info.value.digest == digest
