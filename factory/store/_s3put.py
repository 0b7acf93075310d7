"""Blobs uploaded to S3 straight to their final key, visible only once verified.

An object on S3 does not exist until the request that writes it completes. A multipart
upload to a blob's final key shows nothing there while its parts arrive;
CompleteMultipartUpload makes the whole object visible in one step, and an upload that
is aborted, or abandoned by a writer killed midway, never shows anything
(``BlobStore.clean_tmp`` aborts old ones, which S3 would otherwise keep and bill).

The key is the digest, so the digest must be known before the first part goes out:
the source is hashed first (one read pass), then read again part by part, each part
hashed once more on its way out. ``upload_verified`` returns the upload with every part
sent only when what was sent hashes to the digest and has its size; otherwise it aborts
it, so a file that changes between the two reads publishes nothing. ``complete`` then
publishes it (``ObjectFiles.publish``), ``abort`` drops it (``ObjectFiles.delete``).

Why not hash while uploading, as a stream is put: the digest is known only at the end,
so the parts would go under a temporary key and a server-side copy would publish them,
and the copy rewrites every byte on the server (``benchmarks/bench_s3_put.py``: 3.07x
boto3's ``upload_file`` for 256 MiB to moto, against reading a local file twice, which
costs one page-cache pass). Streams that can be read only once still take that path.

Parts go out on a small thread pool with at most ``WINDOW`` bytes in flight, so memory
stays near ``WINDOW`` plus one part whatever the size of the blob.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from factory.errors import FactorySystemError

__all__ = ["PART", "WINDOW", "MultipartUpload", "Read", "abort_stale", "part_size", "upload_verified"]

log = logging.getLogger(__name__)

# Parts of 8 MiB, up to 8 in flight, like boto3's managed upload (8 MiB, 10 threads).
PART = 8 << 20
WINDOW = 64 << 20
_MAX_PARTS = 10_000

Progress = Callable[[int], None]
Read = Callable[[int, int], bytes]  # (offset, n) -> n bytes, fewer only at the end


def part_size(size: int) -> int:
    """Part size for ``size`` bytes: ``PART``, or larger (whole MiB) when 10,000 parts would not hold it."""
    need = -(-size // _MAX_PARTS)
    return max(PART, -(-need // (1 << 20)) << 20)


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _failed(what: str, exc: BaseException) -> FactorySystemError:
    text = str(exc).strip().splitlines()
    return FactorySystemError(f"{what} failed ({text[0][:300] if text else type(exc).__name__}); "
                              "nothing was published: retry the put")


class MultipartUpload:
    """A multipart upload to one key: parts sent on a thread pool, at most ``WINDOW`` bytes in flight.

    Nothing exists at the key until ``complete``; ``abort`` drops every part. Parts carry
    a CRC32, as boto3's managed upload sends them, so the server checks each on arrival
    and completes from the parts' checksums.
    """

    def __init__(self, client, path: str, *, progress: Progress | None = None):
        self.client = client
        self.path = path
        self.bucket, self.key = path.split("/", 1)
        self.size = 0
        self._progress = progress
        self._futures: list[Future] = []
        self._in_flight: dict[Future, int] = {}
        try:
            self.upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                            ChecksumAlgorithm="CRC32")["UploadId"]
        except _boto_errors() as exc:
            raise _failed(f"starting the upload to {path}", exc) from exc
        self._pool = ThreadPoolExecutor(max(2, -(-WINDOW // PART)), thread_name_prefix="s3-part")

    def send(self, data: bytes) -> None:
        """Queue ``data`` as the next part; wait while the window is full; raise a failed part's error."""
        if len(self._futures) >= _MAX_PARTS:
            raise FactorySystemError(f"the upload to {self.path} needs more than {_MAX_PARTS} parts, "
                                     "S3's limit; nothing was published")
        future = self._pool.submit(self._send, len(self._futures) + 1, data)
        self._futures.append(future)
        self._in_flight[future] = len(data)
        self.size += len(data)
        self._settle(WINDOW)

    def _send(self, number: int, data: bytes) -> dict:
        try:
            sent = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                           PartNumber=number, Body=data, ChecksumAlgorithm="CRC32")
        except _boto_errors() as exc:
            raise _failed(f"uploading part {number} to {self.path}", exc) from exc
        part = {"PartNumber": number, "ETag": sent["ETag"]}
        if "ChecksumCRC32" in sent:
            part["ChecksumCRC32"] = sent["ChecksumCRC32"]
        return part

    def _settle(self, limit: int) -> None:
        """Collect finished parts (reporting progress); block until at most ``limit`` bytes are in flight."""
        while self._in_flight:
            block = sum(self._in_flight.values()) > limit
            done, _ = wait(self._in_flight, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            if not done:
                return
            for future in done:
                n = self._in_flight.pop(future)
                future.result()
                if self._progress is not None:
                    self._progress(n)

    def finish(self) -> None:
        """Wait until every part is sent."""
        self._settle(0)
        self._pool.shutdown(wait=True)

    def complete(self) -> None:
        """Make the whole object visible at the key in one step (replacing what stands there)."""
        parts = [future.result() for future in self._futures]
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": parts})
        except _boto_errors() as exc:
            raise _failed(f"completing the upload to {self.path}", exc) from exc

    def abort(self) -> None:
        """Stop sending and drop the parts: nothing appears at the key."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._in_flight.clear()
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except _boto_errors() as exc:  # nothing visible either way; clean_tmp aborts it later
            if _code(exc) != "NoSuchUpload":
                log.warning("could not abort the upload to %s: %s", self.path, exc)


def upload_verified(client, path: str, read: Read, size: int, digest: str, *,
                    progress: Progress | None = None, name: str | None = None) -> MultipartUpload:
    """Send ``size`` bytes read by ``read`` to ``path`` (``bucket/key``), hashing them again on
    the way; the upload, every part sent, once they hash to ``digest``. Not yet completed."""
    upload = MultipartUpload(client, path, progress=progress)
    try:
        hasher, offset, part = hashlib.sha256(), 0, part_size(size)
        while offset < size or offset == 0:  # an empty blob is one empty part
            data = read(offset, min(part, size - offset))
            hasher.update(data)
            upload.send(data)
            offset += len(data)
            if not data:
                break
        upload.finish()
        if offset != size or "sha256:" + hasher.hexdigest() != digest:
            raise FactorySystemError(
                f"{name or 'the source'} changed while it was being stored (its bytes no longer hash to "
                f"{digest}); nothing was published: put it again once nothing is writing to it")
    except BaseException:
        upload.abort()
        raise
    return upload


def abort_stale(client, bucket: str, prefix: str, older_than_s: float) -> int:
    """Abort multipart uploads under ``prefix`` started more than ``older_than_s`` ago; how many."""
    cutoff = datetime.now(timezone.utc).timestamp() - older_than_s
    aborted = 0
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < cutoff:
                    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
    except _boto_errors() as exc:
        text = str(exc).strip().splitlines()
        raise FactorySystemError(f"listing the unfinished uploads under {bucket}/{prefix} failed "
                                 f"({text[0][:300] if text else type(exc).__name__}); retry") from exc
    return aborted
