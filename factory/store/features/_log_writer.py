"""A buffered writer for the feature log: serving hands it one row per request and never waits.

One Lance commit per request does not scale (a commit costs milliseconds, and commits
from many replicas contend for the same manifest). The writer keeps rows in a bounded
buffer and a background thread commits them as one batch when ``flush_rows`` are
waiting or the oldest has waited ``flush_seconds``. ``write`` only takes a lock and
appends to a list: it never does I/O, and when the buffer is full (the store is slow or
down) it drops the row and counts it rather than grow.

Several processes may each run a writer on the same log: each batch is one Lance
append, and Lance rebases concurrent appends onto each other (appends never conflict),
so no row is lost; a commit that still fails (contention past Lance's retries, a
transient storage error) is retried by the thread with backoff. Every ``optimize_rows``
rows it committed, a writer also compacts the log's small fragments and brings the
``request_id`` index up to date (``FeatureLog.optimize``), so ``find`` stays fast.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, UserError

if TYPE_CHECKING:
    from factory.store.features._log import FeatureLog

__all__ = ["FeatureLogWriter", "WriterStats"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_CLOSE_GRACE_S = 5.0


@dataclass(frozen=True)
class WriterStats:
    """Counters of one writer since it started.

    ``accepted``: rows handed to ``write`` (each ends up written, dropped, rejected or
    pending); ``written``: rows committed; ``dropped``: rows lost
    to a full buffer, a write after ``close`` or a commit still failing at close;
    ``rejected``: rows Arrow could not read with the log's schema; ``commits``: Lance
    commits made; ``errors``: failed commit attempts; ``pending``: rows not yet committed.
    """

    accepted: int
    written: int
    dropped: int
    rejected: int
    commits: int
    errors: int
    pending: int


class FeatureLogWriter:
    """Buffered, thread-safe, non-blocking rows into a ``FeatureLog`` (see the module docstring).

    Use ``FeatureLog.writer(...)`` to make one; ``with`` closes it. ``clock`` is a
    monotonic clock in seconds (injected for tests).
    """

    def __init__(
        self,
        target: FeatureLog,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        max_pending: int = 100_000,
        optimize_rows: int | None = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if flush_rows < 1 or max_pending < flush_rows:
            raise InvalidInputError(
                f"flush_rows ({flush_rows}) must be at least 1 and at most max_pending ({max_pending})"
            )
        if not flush_seconds > 0:
            raise InvalidInputError(f"flush_seconds must be positive, not {flush_seconds}")
        if optimize_rows is not None and optimize_rows < 1:
            raise InvalidInputError(f"optimize_rows must be positive or None (never optimize), not {optimize_rows}")
        self.target = target
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.optimize_rows = optimize_rows
        self._clock = clock
        self._cond = threading.Condition()
        self._buffer: list[Mapping[str, Any]] = []
        self._oldest = 0.0
        self._in_flight = 0
        self._flush_asked = False
        self._closed = False
        self._close_deadline: float | None = None
        self._accepted = self._settled = 0
        self._written = self._dropped = self._rejected = self._commits = self._errors = 0
        self._since_optimize = 0
        self._thread = threading.Thread(target=self._run, name=f"feature-log-{target.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the request path -------------------------------------------------------

    def write(self, row: Mapping[str, Any]) -> bool:
        """Queue one logged row; False if it was dropped (buffer full or writer closed). Never does I/O."""
        _check_row(row)
        with self._cond:
            if self._closed or len(self._buffer) + self._in_flight >= self.max_pending:
                self._accepted += 1
                self._settled += 1
                self._dropped += 1
                return False
            self._buffer.append(row)
            self._accepted += 1
            if len(self._buffer) == 1:
                self._oldest = self._clock()
                self._cond.notify_all()  # the thread starts timing the batch's age
            elif len(self._buffer) >= self.flush_rows:
                self._cond.notify_all()
            return True

    # -- control ----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Commit every row written before this call; True once they are settled (written or dropped)."""
        with self._cond:
            target = self._accepted
            self._flush_asked = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float | None = 30.0) -> WriterStats:
        """Flush, stop the thread and return the final counters.

        A batch still failing after ``timeout`` seconds is dropped (and counted), so
        shutting down never hangs on a store that is down. Writes after ``close`` are dropped.
        """
        with self._cond:
            if not self._closed:
                self._closed = True
                self._close_deadline = None if timeout is None else self._clock() + timeout
                self._cond.notify_all()
        # The thread gives up by the deadline on its own; the grace covers a commit hung in I/O.
        self._thread.join(None if timeout is None else timeout + _CLOSE_GRACE_S)
        atexit.unregister(self.close)
        return self.stats()

    def stats(self) -> WriterStats:
        with self._cond:
            return WriterStats(
                accepted=self._accepted, written=self._written, dropped=self._dropped, rejected=self._rejected,
                commits=self._commits, errors=self._errors, pending=len(self._buffer) + self._in_flight,
            )

    def __enter__(self) -> FeatureLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the flush thread -------------------------------------------------------

    def _due(self) -> bool:
        if not self._buffer:
            return False
        return (self._closed or self._flush_asked or len(self._buffer) >= self.flush_rows
                or self._clock() - self._oldest >= self.flush_seconds)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closed:
                        return
                    self._flush_asked = False
                    wait = self.flush_seconds - (self._clock() - self._oldest) if self._buffer else None
                    self._cond.wait(wait)
                batch, self._buffer = self._buffer, []
                self._in_flight = len(batch)
            self._commit(batch)

    def _commit(self, batch: list[Mapping[str, Any]]) -> None:
        """Commit one batch, retrying with backoff; settle its rows either way."""
        backoff = min(self.flush_seconds, 1.0)
        while True:
            try:
                written, rejected = self.target._commit_rows(batch)
                break
            except UserError as exc:  # the rows themselves are wrong: retrying cannot help
                log.error("feature log %s: %d rows rejected: %s", self.target.name, len(batch), exc)
                written, rejected = 0, len(batch)
                break
            except Exception as exc:  # noqa: BLE001 - a logging thread must survive any storage error
                with self._cond:
                    self._errors += 1
                    give_up = self._closed and (
                        self._close_deadline is not None and self._clock() + backoff > self._close_deadline
                    )
                log.warning("feature log %s: commit of %d rows failed (%s)%s", self.target.name, len(batch), exc,
                            "; dropping them" if give_up else f"; retrying in {backoff:.1f} s")
                if give_up:
                    written, rejected = 0, 0
                    with self._cond:
                        self._dropped += len(batch)
                    break
                with self._cond:
                    self._cond.wait_for(lambda: self._closed and self._close_deadline is not None
                                        and self._clock() >= self._close_deadline, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        with self._cond:
            self._written += written
            self._rejected += rejected
            self._commits += 1 if written else 0
            self._settled += len(batch)
            self._in_flight = 0
            self._since_optimize += written
            optimize = self.optimize_rows is not None and self._since_optimize >= self.optimize_rows
            if optimize:
                self._since_optimize = 0
            self._cond.notify_all()
        if optimize:
            try:
                self.target.optimize()
            except Exception as exc:  # noqa: BLE001 - another writer may be optimizing: try again later
                log.info("feature log %s: optimize skipped (%s)", self.target.name, exc)


def _check_row(row: Any) -> None:
    """What can be checked without I/O: a mapping with the required columns and an aware ``ts``."""
    from factory.store.features._log import REQUIRED

    if not isinstance(row, Mapping):
        raise InvalidInputError(f"a logged row is a mapping of column to value, not a {type(row).__name__}")
    missing = [c for c in REQUIRED if c not in row]
    if missing:
        raise InvalidInputError(
            f"a logged row needs column(s) {', '.join(missing)}: every row carries request_id, model (digest), "
            "ts (timestamp) and prediction, besides the entity key and the features served"
        )
    ts = row["ts"]
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        raise InvalidInputError(
            f"'ts' of a logged row is {ts!r}: give an aware datetime, e.g. datetime.now(timezone.utc)"
        )
