"""A blob written by a thread of its own where nobody sees it yet, published in one step later.

The CLI stages the file of ``factory store put`` while it is still parsing its
arguments (see ``factory.runtime._prefetch``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from factory.store._hashing import HashingReader

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    Progress = Callable[[int], None]

    class PendingWrite(Protocol):
        """A written, unpublished blob (``blobs.PendingBlob``)."""

        def commit(self) -> str: ...

        def discard(self) -> None: ...

    class BlobWriter(Protocol):
        """What staging needs of a ``blobs.BlobStore`` (which imports this module)."""

        def write(self, reader: HashingReader, *, progress: Progress | None = None,
                  opened: Callable[[], object] | None = None) -> PendingWrite: ...

__all__ = ["StagedBlob"]


class StagedBlob:
    """A blob being written into the store's temporary area by a thread of its own.

    Nothing is visible until ``commit`` publishes it under its digest; ``abort``
    stops the write and removes the temporary file. The CLI stages the file of
    ``factory store put`` while it is still parsing its arguments.
    """

    def __init__(self, blobs: BlobWriter, reader: HashingReader, *, start: bool = True):
        self.blobs = blobs
        self.reader = reader
        self._pending: PendingWrite | None = None
        self._written = 0
        self._failure: list[BaseException] = []
        self._done = False
        self._opened = threading.Event()
        # Set once the write has ended and cleaned up after itself. Waited on instead of joining the
        # thread: in CPython 3.11 a Ctrl-C that lands in Thread.join marks a running thread stopped
        # (``_wait_for_tstate_lock`` releases the lock the live thread holds), so a later join returned
        # at once, the CLI's quick exit killed the stager mid-write and its .part file stayed behind.
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._write, name="blob-stager", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start writing (done by the constructor unless ``start=False``: register the blob for
        ``abort`` first, so that a Ctrl-C landing while the thread starts still finds it)."""
        self._thread.start()

    def _write(self) -> None:
        try:
            self._pending = self.blobs.write(self.reader, progress=self._count, opened=self._opened.set)
        except BaseException as exc:  # raised again by commit()
            self._failure.append(exc)
        finally:
            self._opened.set()
            self._finished.set()

    def wait_opened(self, timeout: float | None = None) -> bool:
        """Wait until the temporary file is open (the filesystem layer loaded) or the write failed."""
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
            while not self._finished.wait(timeout=0.1):
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
        return self._pending.commit()

    def abort(self) -> None:
        """Stop writing and remove what was written; nothing becomes visible.

        Does nothing once ``commit`` has begun: from then on the commit owns the file.
        """
        if self._done:
            return
        self._done = True
        self._stop()

    def _stop(self) -> None:
        self.reader.close()
        while not self._finished.wait(timeout=0.05) and self._thread.is_alive():
            pass  # not alive and not finished: never started (interrupted before start)
        if self._pending is not None:
            self._pending.discard()

    close = abort  # what a HashingReader calls it: release, cancelling if unfinished


