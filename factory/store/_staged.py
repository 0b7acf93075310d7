"""Blobs written where nobody sees them yet, published in one step later.

``StagedBlob`` writes on a thread of its own (the CLI stages the file of ``factory
store put`` while it parses its arguments); ``TmpFile`` is a whole blob in a temporary
file, ``HashingPass`` hashes a source to its end while the caller loads what it needs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from factory.store._hashing import HashingReader
from factory.store._s3put import Pending

if TYPE_CHECKING:
    from factory.store.blobs import BlobStore, Progress

__all__ = ["HashingPass", "StagedBlob", "TmpFile"]


class StagedBlob:
    """A blob being written where nobody sees it yet, by a thread of its own.

    Nothing is visible until ``commit`` publishes it under its digest; ``abort``
    stops the write and removes what was written. The CLI stages the file of
    ``factory store put`` while it is still parsing its arguments.
    """

    def __init__(self, blobs: BlobStore, reader: HashingReader):
        self.blobs = blobs
        self.reader = reader
        self._written = 0
        self._failure: list[BaseException] = []
        self._staged: tuple[str, Pending] | None = None
        self._done = False
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._write, name="blob-stager", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            self._staged = self.blobs._prepare(self.reader, self._count, opened=self._opened.set)
        except BaseException as exc:  # raised again by commit()
            self._failure.append(exc)
        finally:
            self._opened.set()

    def wait_opened(self, timeout: float | None = None) -> bool:
        """Wait until the write has begun (the filesystem layer loaded) or failed."""
        return self._opened.wait(timeout)

    def _count(self, n: int) -> None:
        self._written += n

    def commit(self, *, progress: Progress | None = None) -> str:
        """Wait for the write to end, then publish the blob; return its digest."""
        if self._done:
            raise RuntimeError("this staged blob was already committed or aborted")
        self._done = True
        reported = 0
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.1)
                if progress is not None and self._written > reported:
                    progress(self._written - reported)
                    reported = self._written
        except BaseException:
            self._stop()
            raise
        if self._failure:
            raise self._failure[0]
        if progress is not None and self._written > reported:
            progress(self._written - reported)
        digest, pending = self._staged
        pending.publish()
        return digest

    def abort(self) -> None:
        """Stop writing and remove what was written; nothing becomes visible.

        Does nothing once ``commit`` has begun: from then on the commit owns the write.
        """
        if self._done:
            return
        self._done = True
        self._stop()

    def _stop(self) -> None:
        self.reader.close()
        self._thread.join()
        if self._staged is not None:
            self._staged[1].discard()

    close = abort  # what a HashingReader calls it: release, cancelling if unfinished


class HashingPass:
    """``reader.drain()`` on a thread of its own; ``result()`` waits for it and raises what it raised."""

    def __init__(self, reader: HashingReader):
        self._outcome: list = []
        self.thread = threading.Thread(target=self._run, args=(reader,), name="blob-hashing-pass", daemon=True)
        self.thread.start()

    def _run(self, reader: HashingReader) -> None:
        try:
            self._outcome.append(reader.drain())
        except BaseException as exc:
            self._outcome.append(exc)

    def result(self) -> int:
        self.thread.join()
        if isinstance(self._outcome[0], BaseException):
            raise self._outcome[0]
        return self._outcome[0]


class TmpFile(Pending):
    """A temporary file (or object) holding a whole blob: ``publish`` moves it into place."""

    def __init__(self, blobs: BlobStore, tmp: str, digest: str, size: int):
        self.blobs, self.tmp, self.digest, self.size = blobs, tmp, digest, size

    def publish(self) -> None:
        self.blobs._finish(self.tmp, self.digest, self.size)

    def discard(self) -> None:
        self.blobs._discard(self.tmp)
