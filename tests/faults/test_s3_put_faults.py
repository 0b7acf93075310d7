"""Blob writers on S3 killed midway or racing each other: a blob appears whole or not at all."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from _procs import run_together

from factory.settings import Settings

_PART = 5 << 20  # S3's smallest part: a few MiB take the path of a large blob


def _blobs(settings: Settings):
    from factory.store import BlobStore, _fs

    return BlobStore(_fs.join(settings.home, "blobs"), settings=settings)


def _small_parts() -> None:
    from factory.store import _s3put

    _s3put.PART = _PART
    _s3put.WINDOW = _PART


def _wait_for(path: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def _put_then_hang(settings: Settings, source: str, marker: str) -> None:
    """Put ``source``; once the first part is sent, say so and stop there (to be killed)."""
    _small_parts()

    def progress(n: int) -> None:
        Path(marker).touch()
        time.sleep(3600)

    _blobs(settings).put(source, progress=progress)


def _uploads(blobs) -> list[str]:
    bucket, prefix = blobs.root.split("/", 1)
    pages = blobs._files.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix + "/")
    return [u["Key"] for page in pages for u in page.get("Uploads", [])]


def _key(path: str) -> str:
    return path.split("/", 1)[1]


def test_a_writer_killed_mid_upload_leaves_nothing_at_the_key(s3_settings, tmp_path):
    """kill -9 while a blob's parts go to its final key: nothing is there, clean_tmp frees the parts, a re-put works."""
    data = os.urandom(24 << 20)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    marker = tmp_path / "sending"
    proc = mp.get_context("spawn").Process(target=_put_then_hang, args=(s3_settings, str(source), str(marker)))
    proc.start()
    try:
        _wait_for(marker)
        blobs = _blobs(s3_settings)
        assert _uploads(blobs) == [_key(blobs.path(digest))]  # caught mid-upload to the final key
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    assert not blobs.exists(digest) and list(blobs.digests()) == []
    assert blobs.clean_tmp(older_than_s=-1) == 1
    assert _uploads(blobs) == []
    assert blobs.put(source) == digest and blobs.get(digest) == data


def _put_at_the_barrier(settings: Settings, source: str, markers: str, me: int, out) -> None:
    """Put ``source`` while the other writer puts it too: both send every part before either
    completes; writer 1 completes only once writer 0's blob is published (and a second later)."""
    _small_parts()
    size, sent = os.path.getsize(source), 0

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        if sent == size:
            Path(f"{markers}.sent.{me}").touch()
            for other in range(2):
                _wait_for(Path(f"{markers}.sent.{other}"))
            if me == 1:
                _wait_for(Path(f"{markers}.published"))
                time.sleep(1.1)  # object stores keep modification times to the second

    digest = _blobs(settings).put(source, progress=progress)
    if me == 0:
        Path(f"{markers}.published").touch()
    out.put(digest)


def test_two_processes_putting_the_same_blob_at_once(s3_settings, tmp_path):
    """Two writers upload the same blob at once: both succeed, the first one's object stays untouched, no upload is left."""
    data = os.urandom(16 << 20)
    source = tmp_path / "same.bin"
    source.write_bytes(data)
    markers = tmp_path / "writer"
    results = run_together(_put_at_the_barrier, [(s3_settings, str(source), str(markers), me) for me in range(2)],
                           timeout_s=180)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert results == [digest, digest]
    blobs = _blobs(s3_settings)
    assert list(blobs.digests()) == [digest] and blobs.get(digest) == data
    published = Path(f"{markers}.published").stat().st_mtime
    assert blobs.fs.get_file_info(blobs.path(digest)).mtime.timestamp() <= published  # not rewritten by writer 1
    assert _uploads(blobs) == [] and blobs.verify_all() == []
