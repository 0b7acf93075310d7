"""Blobs on S3 without a rename: uploads that show nothing at a key until they are verified.

An object on S3 does not exist until the request that writes it completes. A multipart
upload made at a blob's final key shows nothing there while its parts arrive;
CompleteMultipartUpload makes the whole object visible in one step, and an upload that
is aborted, or abandoned by a writer killed midway, never shows anything
(``BlobStore.clean_tmp`` aborts old ones, which S3 would otherwise keep and bill). So:

- When the digest is known before the bytes go out (bytes in memory; a regular file or
  a seekable stream, hashed first in one read pass), the blob is uploaded straight to
  its final key. Every part is read again and re-hashed on the way, and the upload is
  completed only when what was sent hashes to the digest and has its size; otherwise
  it is aborted, so a file that changes between the two reads publishes nothing.
- A stream that cannot be read twice (a pipe, a socket, a remote file) names its key
  only at its end. Up to one part is held in memory, then written with one PutObject;
  a longer one is uploaded under a temporary key and copied server-side to its final
  key (CopyObject, or UploadPartCopy in parallel ranges above S3's 5 GiB single-copy
  limit), and the temporary object is deleted.

Every write at a final key is conditional (``If-None-Match: *``; AWS S3, MinIO and moto
honour it, and Lance's commits on S3 need it anyway). A concurrent writer of the same
digest writes the same bytes, so "already there" is success once the size matches.

Why hash first (``benchmarks/bench_s3_put.py``, 256 MiB to moto on loopback, 2 cores
shared with other work; medians of interleaved whole-process runs): the old path, which
hashed while uploading under a temporary key and then copied, took 3.07x boto3's
``upload_file``: the copy rewrites every byte on the server (3-6 s of moto's time for
256 MiB, and on AWS roughly a second per 100-200 MB). UploadPartCopy in 8 parallel
ranges was slower still on moto (16.6 s against CopyObject's 5.2 s: moto reads the whole
source for every range). Reading a file twice costs a page-cache pass: hashing 256 MiB
took about 1 s, a tenth of the upload, and the CLI's head start (``_prefetch``) hashes
while the CLI loads. Spooling unseekable streams to local disk would avoid their copy
too, but needs local space as large as the blob; they are rare (files and bytes are
what the store puts) and keep the copy.

Parts go out on a small thread pool with at most ``WINDOW`` bytes in flight, so memory
stays near ``WINDOW`` plus one part whatever the size of the blob.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from factory.errors import CorruptBlobError, FactorySystemError

__all__ = ["NOTHING", "PART", "SINGLE_COPY_LIMIT", "WINDOW", "MultipartUpload", "Pending", "Read", "S3Bucket",
           "part_size"]

log = logging.getLogger(__name__)

# Parts of 8 MiB, up to 8 in flight, like boto3's managed upload (8 MiB, 10 threads). On
# moto, 16 and 32 MiB parts (4 to 8 in flight) were 1.3-2x slower for 256 MiB; 8 x 8
# matched boto3's ``upload_file`` in the same runs.
PART = 8 << 20
WINDOW = 64 << 20
SINGLE_COPY_LIMIT = 5 << 30  # S3 refuses a CopyObject of a larger source
COPY_PART = 512 << 20  # ranges of a multipart copy: 10,000 of them reach S3's 5 TiB object limit
_MAX_PARTS = 10_000
_CONFLICT_RETRIES = 4  # a 409 ConditionalRequestConflict asks for the complete to be retried

Progress = Callable[[int], None]
Read = Callable[[int, int], bytes]  # (offset, n) -> n bytes, fewer only at the end


def part_size(size: int) -> int:
    """Part size for ``size`` bytes: ``PART``, or larger (whole MiB) when 10,000 parts would not hold it."""
    need = -(-size // _MAX_PARTS)
    return max(PART, -(-need // (1 << 20)) << 20)


def _stream_part(number: int) -> int:
    """Size of part ``number`` of a stream of unknown length: growing every 2,000 parts (469 GiB in all)."""
    return PART * (1 + (number - 1) // 2000)


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_precondition_failed(exc: BaseException) -> bool:
    return _code(exc) in ("PreconditionFailed", "412")


def _failed(what: str, exc: BaseException, then: str = "nothing was published: retry the put") -> FactorySystemError:
    text = str(exc).strip().splitlines()
    return FactorySystemError(f"{what} failed ({text[0][:300] if text else type(exc).__name__}); {then}")


def _changed(name: str | None, digest: str) -> FactorySystemError:
    return FactorySystemError(
        f"{name or 'the source'} changed while it was being stored (its bytes no longer hash to {digest}); "
        "nothing was published: put it again once nothing is writing to it"
    )


class Pending:
    """Bytes sent and verified but not yet visible: ``publish`` shows them, ``discard`` drops them."""

    def publish(self) -> None:
        pass

    def discard(self) -> None:
        pass


NOTHING = Pending()  # what a blob that is already stored needs


class S3Bucket:
    """One bucket, through a thread-safe boto3 client."""

    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket

    # -- single requests ---------------------------------------------------------------
    def size(self, key: str) -> int | None:
        """The size of the object at ``key``; ``None`` when there is none."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except _boto_errors() as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _failed(f"checking {self.bucket}/{key}", exc, "retry") from exc

    def put_if_absent(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` in one request, unless something is already there."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
        except _boto_errors() as exc:
            if not _is_precondition_failed(exc):
                raise _failed(f"uploading {self.bucket}/{key}", exc) from exc
            self.check_existing(key, len(data))

    def check_existing(self, key: str, size: int) -> None:
        """Accept what another writer published at ``key``: it must have the size of what we hashed."""
        found = self.size(key)
        if found is None:  # refused as present, gone since: deleted meanwhile
            raise FactorySystemError(f"{self.bucket}/{key} was deleted while it was being put; "
                                     "nothing was published: retry the put")
        if found != size:
            location = f"{self.bucket}/{key}"
            raise CorruptBlobError(
                f"blob at {location} holds {found} bytes where its content has {size}: it is corrupt. "
                "Delete that object and put the blob again; run 'factory store verify' to find others",
                "sha256:" + key.rsplit("/", 1)[-1], location,
            )

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _boto_errors() as exc:  # a stray temporary object is removed by clean_tmp
            log.warning("could not delete %s/%s: %s", self.bucket, key, exc)

    # -- blobs whose digest is known ---------------------------------------------------
    def upload_verified(self, key: str, read: Read, size: int, digest: str, *,
                        progress: Progress | None = None, name: str | None = None) -> Pending:
        """Send ``size`` bytes read by ``read`` to ``key``, re-hashing them; ready to publish only if they hash to ``digest``."""
        if size <= PART:
            data = read(0, size)
            if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                raise _changed(name, digest)
            if progress is not None:
                progress(size)
            return self.pending_put(key, data)
        upload = MultipartUpload(self, key, progress=progress)
        try:
            hasher, offset, part = hashlib.sha256(), 0, part_size(size)
            while offset < size:
                data = read(offset, min(part, size - offset))
                if not data:
                    break
                hasher.update(data)
                upload.send(data)
                offset += len(data)
            if offset != size or "sha256:" + hasher.hexdigest() != digest:
                raise _changed(name, digest)
            upload.finish()
        except BaseException:
            upload.discard()
            raise
        return upload

    # -- streams read once -------------------------------------------------------------
    def upload_stream(self, tmp_key: str, chunks: Iterable[memoryview], *,
                      progress: Progress | None = None) -> tuple[int, bytes | None]:
        """Send ``chunks`` to ``tmp_key``; ``(size, None)``, or ``(size, bytes)`` when they fit in one part
        (then nothing was sent: the caller writes them where they belong)."""
        pieces: list[bytes] = []
        held = size = 0
        upload: MultipartUpload | None = None
        try:
            for chunk in chunks:
                pieces.append(bytes(chunk))  # the reader reuses its buffers
                held += len(chunk)
                size += len(chunk)
                while held >= (limit := _stream_part(upload.parts + 1 if upload else 1)):
                    data = b"".join(pieces)
                    upload = upload or MultipartUpload(self, tmp_key, progress=progress)
                    upload.send(data[:limit])
                    pieces, held = [data[limit:]], held - limit
            if upload is None:
                return size, b"".join(pieces)
            if held:
                upload.send(b"".join(pieces))
            upload.finish()
            upload.complete(conditional=False)  # a fresh temporary key: nobody else writes there
        except BaseException:
            if upload is not None:
                upload.discard()
            raise
        return size, None

    def pending_put(self, key: str, data: bytes) -> Pending:
        """Publishing ``data`` (at most a part, hashed in memory) at ``key`` with one conditional PutObject."""
        return _Put(self, key, data)

    def pending_copy(self, tmp_key: str, key: str, size: int) -> Pending:
        """Publishing the complete temporary object ``tmp_key`` at ``key`` (see ``_Copy``)."""
        return _Copy(self, tmp_key, key, size)

    # -- housekeeping ------------------------------------------------------------------
    def abort_stale(self, prefix: str, older_than_s: float) -> int:
        """Abort multipart uploads under ``prefix`` started more than ``older_than_s`` ago; how many."""
        cutoff = datetime.now(timezone.utc).timestamp() - older_than_s
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        aborted += 1
        except _boto_errors() as exc:
            raise _failed(f"listing the unfinished uploads under {self.bucket}/{prefix}", exc) from exc
        return aborted


class MultipartUpload(Pending):
    """A multipart upload to one key: parts sent on a thread pool, at most ``WINDOW`` bytes in flight.

    Nothing exists at the key until ``publish`` (or ``complete``); ``discard`` aborts.
    Parts carry a CRC32, as boto3's managed upload sends them, so the server checks each
    on arrival (the digest is checked here) and completes from the parts' checksums;
    without them moto computed a checksum of the whole object at completion (1.5-2 s
    against 1.0-1.3 s for 256 MiB). ``checksums=False`` for parts copied server-side.
    """

    def __init__(self, bucket: S3Bucket, key: str, *, progress: Progress | None = None, window: int | None = None,
                 checksums: bool = True):
        self.bucket = bucket
        self.key = key
        self.size = 0
        self._checksum = {"ChecksumAlgorithm": "CRC32"} if checksums else {}
        self._progress = progress
        self._window = window or WINDOW
        self._futures: list[Future] = []
        self._in_flight: dict[Future, int] = {}
        self._pool: ThreadPoolExecutor | None = None
        try:
            self.upload_id = bucket.client.create_multipart_upload(Bucket=bucket.bucket, Key=key,
                                                                   **self._checksum)["UploadId"]
        except _boto_errors() as exc:
            raise _failed(f"starting the upload to {bucket.bucket}/{key}", exc) from exc
        threads = max(2, -(-self._window // PART))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="s3-part")

    @property
    def parts(self) -> int:
        return len(self._futures)

    def send(self, data: bytes) -> None:
        """Queue ``data`` as the next part; wait while the window is full; raise a failed part's error."""
        if self.parts >= _MAX_PARTS:
            raise FactorySystemError(f"the upload to {self.bucket.bucket}/{self.key} needs more than "
                                     f"{_MAX_PARTS} parts, S3's limit; nothing was published")
        future = self._pool.submit(self._send, self.parts + 1, data)
        self._futures.append(future)
        self._in_flight[future] = len(data)
        self.size += len(data)
        self._settle(self._window)

    def _send(self, number: int, data: bytes) -> dict:
        try:
            sent = self.bucket.client.upload_part(Bucket=self.bucket.bucket, Key=self.key, UploadId=self.upload_id,
                                                  PartNumber=number, Body=data, **self._checksum)
        except _boto_errors() as exc:
            raise _failed(f"uploading part {number} to {self.bucket.bucket}/{self.key}", exc) from exc
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

    def complete(self, *, conditional: bool = True) -> bool:
        """Make the object visible; ``False`` when a conditional complete found one already there."""
        self.finish()
        parts = [future.result() for future in self._futures]
        self._shutdown()
        extra = {"IfNoneMatch": "*"} if conditional else {}
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self.bucket.client.complete_multipart_upload(
                    Bucket=self.bucket.bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts}, **extra)
                return True
            except _boto_errors() as exc:
                if _is_precondition_failed(exc):
                    return False
                if _code(exc) != "ConditionalRequestConflict" or attempt == _CONFLICT_RETRIES:
                    raise _failed(f"completing the upload to {self.bucket.bucket}/{self.key}", exc) from exc
                time.sleep(0.1 * 2 ** attempt)
        return False  # pragma: no cover - the loop returns or raises

    def publish(self) -> None:
        try:
            created = self.complete()
        except BaseException:
            self.discard()
            raise
        if not created:
            self.discard()  # S3 keeps an upload whose complete was refused
            self.bucket.check_existing(self.key, self.size)

    def discard(self) -> None:
        """Stop sending and abort the upload: nothing appears at the key."""
        self._shutdown()
        try:
            self.bucket.client.abort_multipart_upload(Bucket=self.bucket.bucket, Key=self.key, UploadId=self.upload_id)
        except _boto_errors() as exc:  # nothing visible either way; clean_tmp aborts it later
            if _code(exc) != "NoSuchUpload":
                log.warning("could not abort the upload to %s/%s: %s", self.bucket.bucket, self.key, exc)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._in_flight.clear()


class _Put(Pending):
    """A blob of at most one part, hashed in memory: one conditional PutObject publishes it."""

    def __init__(self, bucket: S3Bucket, key: str, data: bytes):
        self.bucket, self.key, self.data = bucket, key, data

    def publish(self) -> None:
        self.bucket.put_if_absent(self.key, self.data)


class _Copy(Pending):
    """A complete temporary object, published by a server-side copy to its final key, then deleted."""

    def __init__(self, bucket: S3Bucket, tmp_key: str, key: str, size: int):
        self.bucket, self.tmp_key, self.key, self.size = bucket, tmp_key, key, size

    def publish(self) -> None:
        b = self.bucket
        try:
            if self.size <= SINGLE_COPY_LIMIT:
                try:
                    b.client.copy_object(Bucket=b.bucket, Key=self.key, IfNoneMatch="*",
                                         CopySource={"Bucket": b.bucket, "Key": self.tmp_key})
                except _boto_errors() as exc:
                    if not _is_precondition_failed(exc):
                        raise _failed(f"publishing {b.bucket}/{self.key}", exc) from exc
                    b.check_existing(self.key, self.size)
            else:
                self._copy_in_parts()
        finally:
            b.delete(self.tmp_key)

    def _copy_in_parts(self) -> None:
        """UploadPartCopy of ranges in parallel into a multipart upload at the final key (one step at its end)."""
        b = self.bucket
        upload = MultipartUpload(b, self.key, checksums=False)
        source = {"Bucket": b.bucket, "Key": self.tmp_key}

        def copy(number: int, start: int) -> dict:
            end = min(start + COPY_PART, self.size) - 1
            try:
                result = b.client.upload_part_copy(Bucket=b.bucket, Key=self.key, UploadId=upload.upload_id,
                                                   PartNumber=number, CopySource=source,
                                                   CopySourceRange=f"bytes={start}-{end}")
            except _boto_errors() as exc:
                raise _failed(f"copying part {number} to {b.bucket}/{self.key}", exc) from exc
            return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

        upload.size = self.size
        upload._futures = [upload._pool.submit(copy, n, start)
                           for n, start in enumerate(range(0, self.size, COPY_PART), 1)]
        upload.publish()

    def discard(self) -> None:
        self.bucket.delete(self.tmp_key)
