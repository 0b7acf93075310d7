"""Read a stream and hash it ahead of whoever consumes the bytes; check what is read back.

``HashingReader`` runs two threads: one reads the source into large buffers, the
other hashes them in order. The consumer (the blob writer) takes hashed buffers as
they come and hands each back when done, so the source is read exactly once and
memory stays bounded by the buffer pool. hashlib and file reads release the GIL on
large buffers, so on two cores reading, hashing and writing overlap and a put of a
large file costs about what hashing it alone costs.

A reader can start before anyone knows where the bytes will go; the CLI starts one
on the file named by ``factory store put`` before it parses its arguments and stages
it into the store (``StagedBlob``; see ``factory.runtime._prefetch``).
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, Self

__all__ = ["BUFFERS", "CHUNK", "HashingReader", "MemoryReader", "VerifyingReader", "copy_hashed", "thread_buffer"]

# Large enough that hashlib and file I/O release the GIL for long stretches. The pool
# is small on purpose: memory a process touches for the first time is expensive (page
# faults, and on VMs the host backing the page: up to 4 s per GiB on a 2-core AMD EPYC
# VM), and a 1 GiB put through 24 x 8 MiB buffers measured 1.47 s against 1.05 s
# through 4 x 4 MiB (benchmarks/bench_store_put.py). Four buffers keep one each in
# reading, hashing and writing, and one spare.
CHUNK = 4 << 20
BUFFERS = 4


class HashingReader:
    """Reads ``stream`` on a thread, hashes it on another, hands out hashed buffers in order.

    Use as a context manager or call ``close()``: closing before the end cancels the
    threads. ``digest`` is ready once ``chunks()`` is exhausted.
    """

    def __init__(self, stream: BinaryIO, *, name: str | None = None, owns_stream: bool = False,
                 buffers: int = BUFFERS, chunk: int = CHUNK):
        self.name = name
        self.size_hint = _regular_file_size(stream)
        self._stream = stream
        self._owns_stream = owns_stream
        self._buffers = buffers
        self._chunk = chunk
        self._hasher = hashlib.sha256()
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        self._to_hash: queue.Queue[tuple[mmap.mmap, int] | None] = queue.Queue()
        self._ready: queue.Queue[tuple[mmap.mmap, int] | None] = queue.Queue()
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._finished = False
        self._closed = False
        self._threads = [threading.Thread(target=self._read, name="blob-reader", daemon=True),
                         threading.Thread(target=self._hash, name="blob-hasher", daemon=True)]
        for thread in self._threads:
            thread.start()

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs) -> HashingReader:
        """Start reading and hashing the file at ``path`` (which the reader then owns)."""
        stream = open(path, "rb", buffering=0)
        try:
            os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead
        except (AttributeError, OSError):
            pass
        return cls(stream, name=os.fspath(path), owns_stream=True, **kwargs)

    def same_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether this reader reads the file at ``path`` (same device and inode)."""
        try:
            mine, theirs = os.fstat(self._stream.fileno()), os.stat(path)
        except (OSError, AttributeError, ValueError):
            return False
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    # -- the two stages --------------------------------------------------------------
    def _read(self) -> None:
        allocated = 0
        readinto = getattr(self._stream, "readinto", None)
        try:
            while not self._stop.is_set():
                if self._free.empty() and allocated < self._buffers:
                    # Page-aligned anonymous memory, so a local blob writer can hand
                    # the same buffer to the disk directly (O_DIRECT; see _blobfs).
                    buf, allocated = mmap.mmap(-1, self._chunk), allocated + 1
                else:
                    try:
                        buf = self._free.get(timeout=0.1)
                    except queue.Empty:
                        continue
                if readinto is not None:
                    n = readinto(buf)
                else:
                    data = self._stream.read(self._chunk)
                    n = len(data)
                    buf[:n] = data
                if not n:
                    break
                self._to_hash.put((buf, n))
        except BaseException as exc:  # surfaced to the consumer by chunks()
            self._failure.append(exc)
        finally:
            self._to_hash.put(None)

    def _hash(self) -> None:
        while (item := self._to_hash.get()) is not None:
            if not self._stop.is_set():
                buf, n = item
                self._hasher.update(memoryview(buf)[:n])
            self._ready.put(item)
        self._ready.put(None)

    # -- the consumer's side ---------------------------------------------------------
    def _next(self) -> tuple[mmap.mmap, int] | None:
        item = self._ready.get()
        if item is None:
            self._ready.put(None)  # the end stays visible to whoever waits next
        return item

    def chunks(self) -> Iterator[memoryview]:
        """Hashed buffers in source order; each is reused once the consumer asks for the next.

        Raises what the source raised, after the last good buffer, and
        ``InterruptedError`` when ``close`` cancelled the read before its end.
        """
        while (item := self._next()) is not None:
            buf, n = item
            if self._stop.is_set():
                continue  # cancelled: let the stages run out without handing more out
            try:
                yield memoryview(buf)[:n]
            finally:
                self._free.put(buf)
        self._join()
        if self._failure:
            raise self._failure[0]
        if self._stop.is_set():
            raise InterruptedError(f"reading {self.name or 'the stream'} was cancelled before its end")
        self._finished = True

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of everything read; only once ``chunks()`` has run to its end."""
        if not self._finished:
            raise RuntimeError("the digest is known only after every chunk was read without error")
        return "sha256:" + self._hasher.hexdigest()

    def close(self) -> None:
        """Stop early (if still running), wait for the threads, close an owned stream.

        Safe while another thread iterates ``chunks()``: that thread sees the end
        and gets ``InterruptedError``.
        """
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._stop.set()
            while self._next() is not None:  # unblock the stages until both are done
                pass
        self._join()
        if self._owns_stream:
            self._stream.close()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _regular_file_size(stream: BinaryIO) -> int | None:
    """The size of the file behind ``stream`` when it is a regular file, else None."""
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


_local = threading.local()


def thread_buffer() -> mmap.mmap:
    """A page-aligned ``CHUNK``-byte buffer owned by the calling thread, reused by every call.

    Workers that copy many files (a tree) touch fresh memory once, not once per file.
    """
    buf = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = mmap.mmap(-1, CHUNK)
    return buf


def copy_hashed(src: BinaryIO, out, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Copy ``src`` to ``out`` (anything with ``write``) through this thread's buffer,
    hashing the very bytes written; return their digest and count."""
    buf = thread_buffer()
    hasher = hashlib.sha256()
    total = 0
    with memoryview(buf) as whole:
        while n := src.readinto(buf):
            view = whole[:n]
            hasher.update(view)
            out.write(view)
            view.release()
            total += n
            if progress is not None:
                progress(n)
    return "sha256:" + hasher.hexdigest(), total


class MemoryReader(io.RawIOBase):
    """Buffers in memory read as one stream, without copying them first.

    (``io.BytesIO`` copies a bytearray.) ``keep`` holds whatever owns memory the
    buffers only point into, for as long as the stream lives.
    """

    def __init__(self, *parts: bytes | bytearray | memoryview, keep: object = None):
        super().__init__()
        self._parts = [memoryview(p).cast("B") for p in parts]
        self._keep = keep
        self._part = 0
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with memoryview(buffer) as whole:
            out = whole.cast("B")
            filled = 0
            while filled < len(out) and self._part < len(self._parts):
                part = self._parts[self._part]
                n = min(len(out) - filled, len(part) - self._pos)
                out[filled : filled + n] = part[self._pos : self._pos + n]
                filled += n
                self._pos += n
                if self._pos == len(part):
                    self._part, self._pos = self._part + 1, 0
            return filled


class VerifyingReader(io.RawIOBase):
    """A blob's bytes as a stream, hashed as they are read and checked at the end.

    Reaching the end raises ``CorruptBlobError`` when what was read does not hash to
    ``digest``: a consumer that reads to the end (or calls ``verify``) never mistakes
    tampered bytes for good ones, though it has seen them by then.
    """

    def __init__(self, raw: BinaryIO, digest: str, location: str):
        super().__init__()
        self._raw = raw
        self.digest = digest
        self.location = location
        self._hasher = hashlib.sha256()
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            with memoryview(buffer) as view:
                self._hasher.update(view[:n])
        elif not self.verified:
            self._check()
        return n

    def verify(self) -> None:
        """Read what is left and check the digest."""
        buf = thread_buffer()
        while self.readinto(buf):
            pass

    def _check(self) -> None:
        from factory.errors import CorruptBlobError

        actual = "sha256:" + self._hasher.hexdigest()
        if actual != self.digest:
            raise CorruptBlobError(corrupt_message(self.digest, self.location, actual), self.digest, self.location)
        self.verified = True

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def corrupt_message(digest: str, location: str, actual: str) -> str:
    return (
        f"blob {digest} at {location} is corrupt: its content hashes to {actual}. "
        "Restore it from a replica or re-put the original; run 'factory store verify' to find others"
    )
