"""Read a stream and hash it ahead of whoever consumes the bytes.

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
import os
import queue
import stat
import threading
from collections.abc import Iterator
from typing import BinaryIO, Self

__all__ = ["BUFFERS", "CHUNK", "HashingReader", "Reread"]

# Large enough that hashlib and file I/O release the GIL for long stretches, small
# enough to stay in cache. The pool is small on purpose: memory a process touches for
# the first time is expensive (page faults, and on VMs the host backing the page), and
# a 1 GiB put through 24 x 8 MiB buffers measured 1.47 s against 1.05 s through
# 4 x 4 MiB (benchmarks/bench_store_put.py, 2-core VM). Read-ahead beyond the pool
# is not needed: the writer attaches within milliseconds (``StagedBlob`` in the CLI).
CHUNK = 4 << 20
BUFFERS = 6


class HashingReader:
    """Reads ``stream`` on a thread, hashes it on another, hands out hashed buffers in order.

    Use as a context manager or call ``close()``: closing before the end cancels the
    threads. ``digest`` is ready once ``chunks()`` is exhausted.
    """

    def __init__(self, stream: BinaryIO, *, name: str | None = None, owns_stream: bool = False,
                 buffers: int = BUFFERS, chunk: int = CHUNK):
        self.name = name
        self._stream = stream
        self._owns_stream = owns_stream
        self._buffers = buffers
        self._chunk = chunk
        self._hasher = hashlib.sha256()
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._to_hash: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._ready: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._finished = False
        self._closed = False
        self._origin = _position(stream)  # before the reader thread moves it
        self._threads = [threading.Thread(target=self._read, name="blob-reader", daemon=True),
                         threading.Thread(target=self._hash, name="blob-hasher", daemon=True)]
        for thread in self._threads:
            thread.start()

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs) -> HashingReader:
        """Start reading and hashing the file at ``path`` (which the reader then owns)."""
        return cls(open(path, "rb", buffering=0), name=os.fspath(path), owns_stream=True, **kwargs)

    def same_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether this reader reads the file at ``path`` (same device and inode)."""
        try:
            mine, theirs = os.fstat(self._stream.fileno()), os.stat(path)
        except (OSError, AttributeError, ValueError):
            return False
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    @property
    def rereadable(self) -> bool:
        """Whether the source can be read again once hashed (see ``rereader``)."""
        return self._origin is not None

    def rereader(self) -> Reread | None:
        """The source once more, from where this reader began: for a regular file or a seekable
        stream, once ``chunks()`` has run to its end; ``None`` for what can be read only once
        (a pipe, a socket). Close it when done (it holds a descriptor of its own, so closing
        this reader does not pull the file from under it, but stops its reads)."""
        if self._origin is None or not self._finished:
            return None
        try:
            fd = self._stream.fileno()
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except (AttributeError, OSError, ValueError):
            regular = False
        return Reread(self, os.dup(fd) if regular else None, self._origin)

    # -- the two stages --------------------------------------------------------------
    def _read(self) -> None:
        allocated = 0
        readinto = getattr(self._stream, "readinto", None)
        try:
            while not self._stop.is_set():
                if self._free.empty() and allocated < self._buffers:
                    buf, allocated = bytearray(self._chunk), allocated + 1
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
    def _next(self) -> tuple[bytearray, int] | None:
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
        self._free = queue.Queue()  # the buffers are done with: free them now, not at close()
        if self._failure:
            raise self._failure[0]
        if self._stop.is_set():
            raise InterruptedError(f"reading {self.name or 'the stream'} was cancelled before its end")
        self._finished = True

    def drain(self) -> int:
        """Read and hash to the end, keeping none of the bytes; how many there were."""
        return sum(len(chunk) for chunk in self.chunks())

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


class Reread:
    """A finished ``HashingReader``'s source, read again by offset (``read(offset, n)``).

    A regular file is read with ``pread`` on a descriptor of its own; another seekable
    stream by seeking. Reads raise ``InterruptedError`` once the reader is closed, so
    closing the reader cancels whoever reads the source again.
    """

    def __init__(self, reader: HashingReader, fd: int | None, origin: int):
        self._reader = reader
        self._fd = fd
        self._seek = fd is None
        self._origin = origin

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes from ``offset`` past the reader's start; fewer only at the end of the source."""
        data = b""
        while len(data) < n:
            if self._reader._closed:
                raise InterruptedError(f"reading {self._reader.name or 'the stream'} again was cancelled")
            position = self._origin + offset + len(data)
            if self._seek:
                self._reader._stream.seek(position)
                more = self._reader._stream.read(n - len(data))
            else:
                more = os.pread(self._fd, n - len(data), position)
            if not more:
                break
            data = data + more if data else more  # one whole read (the usual case) is not copied
        return data

    def close(self) -> None:
        if self._fd is not None and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1  # reads fail from now on (EBADF), never reach another file

    def __enter__(self) -> Reread:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _position(stream) -> int | None:
    """Where ``stream`` stands, if it can be read again from there (seekable); else ``None``."""
    try:
        return stream.tell() if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None
