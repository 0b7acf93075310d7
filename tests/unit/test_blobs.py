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
from factory.store import _fs


@pytest.fixture
def blobs(home_settings):
    return BlobStore(_fs.join(home_settings.home, "blobs"), settings=home_settings)


@pytest.fixture
def local_blobs(tmp_path):
    """A blob store on a local folder, for what only a local disk has (FIFOs, links, O_DIRECT)."""
    return BlobStore(tmp_path / "blobs")


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
    assert _temporaries(blobs) == []


def test_putting_the_original_again_repairs_a_corrupt_copy(blobs, monkeypatch):
    """A flipped byte or a truncated copy is replaced whole by the next put of the original (on S3 too)."""
    published = []
    real = _fs.publish_object
    monkeypatch.setattr(_fs, "publish_object",
                        lambda fs, tmp, final, size, settings: (published.append((final, size)),
                                                                real(fs, tmp, final, size, settings))[1])
    data = os.urandom(3 << 20)
    digest = blobs.put(data)
    _flip_byte(blobs, blobs.path(digest), 1000)
    assert blobs.verify(digest).problem == "corrupt"
    assert blobs.put(io.BytesIO(data)) == digest
    assert blobs.verify(digest) is None and blobs.get(digest) == data
    _write(blobs, blobs.path(digest), data[:2])
    assert blobs.put(data) == digest
    assert blobs.get(digest) == data
    assert _temporaries(blobs) == []
    # On an object store every publication, the repairs too, is the size-checked server-side copy.
    expected = [(blobs.path(digest), len(data))] * 3 if _fs.is_object_store(blobs.uri) else []
    assert published == expected


def test_a_home_that_cannot_be_reached_fails_once_and_cleans_nothing_up(tmp_path, monkeypatch):
    """A put to an unreachable S3 endpoint fails with one home error; cleaning up does not reach for it again."""
    from factory.errors import StoreHomeError
    from factory.settings import Settings

    calls = []
    real = _fs.filesystem

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(_fs, "filesystem", counted)
    settings = Settings(home="s3://nowhere/home", s3_endpoint="http://127.0.0.1:9", s3_connect_timeout_s=0.5,
                        s3_access_key="k", s3_secret_key="s")
    blobs = BlobStore("s3://nowhere/home/blobs", settings=settings)
    with pytest.raises(StoreHomeError):
        blobs.put(io.BytesIO(b"never stored"))
    assert len(calls) == 1


def test_a_filesystem_without_direct_io_still_stores_large_blobs(local_blobs, tmp_path, monkeypatch):
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
    digest = local_blobs.put(path)
    assert local_blobs.get(digest) == data
    assert local_blobs.get_to(digest, tmp_path / "copy.bin").read_bytes() == data


def test_a_folder_where_a_blob_belongs_is_named(blobs):
    """A put that finds a folder (on S3, a prefix) in its blob's place says so instead of failing obscurely."""
    data = b"content" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs.fs.create_dir(blobs.path(digest))
    _write(blobs, f"{blobs.path(digest)}/stray", b"x")
    with pytest.raises(CorruptBlobError, match="a folder stands where blob"):
        blobs.put(data)
    problem = blobs.verify(digest)
    assert problem.problem == "unreadable" and "not a regular file" in problem.reason
    assert [(b.digest, b.problem) for b in blobs.verify_all()] == [(digest, "unreadable")]


@pytest.mark.parametrize("thing", ["fifo", "link"])
def test_a_fifo_or_link_in_a_blobs_place_is_corrupt_not_a_hang(local_blobs, replace_with_non_file, thing):
    """Reading a blob whose file was replaced by a FIFO or a link fails at once as corrupt, and a put repairs it."""
    blobs = local_blobs
    digest = blobs.put(b"payload" * 100)
    replace_with_non_file(blobs.path(digest), thing)
    with pytest.raises(CorruptBlobError, match="not a regular file"):
        blobs.get(digest)
    problem = blobs.verify(digest)
    assert problem.problem == "unreadable" and problem.reason.startswith("not a regular file")
    # Listed (not followed) so that a whole-store check reports it, but not counted as a stored blob.
    assert list(blobs.entries()) == [(digest, False)] and list(blobs.digests()) == []
    assert [(b.digest, b.problem) for b in blobs.verify_all()] == [(digest, "unreadable")]
    assert blobs.put(b"payload" * 100) == digest  # a put repairs it
    assert blobs.get(digest) == b"payload" * 100


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
    """If the object store holds other than the bytes that were hashed, nothing appears under the digest."""
    from factory.errors import FactorySystemError

    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    tmp = f"{blobs.root}/tmp/short.part"
    _write(blobs, tmp, b"only nine")
    final = blobs.path("sha256:" + "ab" * 32)
    with pytest.raises(FactorySystemError, match="nothing was published"):
        _fs.publish_object(blobs.fs, tmp, final, 10, s3_settings)
    assert blobs.fs.get_file_info(final).type == pafs.FileType.NotFound
    assert _temporaries(blobs) == []


def test_a_blob_past_the_single_copy_limit_is_published_by_a_multipart_copy(s3_settings, s3_server, monkeypatch):
    """Blobs larger than S3 copies in one request (5 GiB) are still published whole, in parts."""
    monkeypatch.setattr(_fs, "SINGLE_COPY_LIMIT", 6 << 20)
    monkeypatch.setattr(_fs, "_COPY_PART", 5 << 20)
    blobs = BlobStore(_fs.join(s3_settings.home, "blobs"), settings=s3_settings)
    data = os.urandom(12 << 20)
    digest = blobs.put(io.BytesIO(data))
    assert blobs.get(digest) == data
    bucket, key = blobs.path(digest).split("/", 1)
    etag = s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # three parts of at most 5 MiB
    assert _temporaries(blobs) == []
