"""Connections to PostgreSQL for the catalog: a small pool per process, timeouts, and which
failures a retry can cure.

``psycopg_pool`` is not a dependency, so the pool is a few lines here: at most ``size``
connections open per process and database, idle ones kept for reuse, each opened with a
connect timeout and TCP keepalives. Pools are shared by every catalog object of a process
for the same URL, and a forked child never touches its parent's connections (it leaves
them be rather than close them, which would end the parent's sessions).

``connection_lost`` and ``conflict`` sort psycopg's errors: a lost connection (the server
restarted, the network dropped) and a serialization failure or deadlock are worth a retry;
anything else is not. ``connect_refused`` turns a connection the server refused for good (no
such database or role, bad password) into a ``InvalidInputError`` that says what to fix.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors

from factory.errors import CatalogUnavailableError, InvalidInputError

__all__ = ["Pool", "pool_for", "forget_pools", "connection_lost", "conflict", "masked", "connect_refused"]

# Server codes that end a session without the client having done anything wrong.
_LOST_STATES = {"57P01", "57P02", "57P03", "53300", "57014"}  # shutdown, crash, starting, too many clients, cancelled
# Phrases of connection failures that no retry cures: the user must change the URL or the server.
_REFUSED = ("does not exist", "authentication failed", "pg_hba.conf", "permission denied", "password")

_pools: dict[tuple[int, str], Pool] = {}
_pools_lock = threading.Lock()
# Connections a forked child inherited: kept referenced so that no finaliser closes them
# (closing would send the server a goodbye on the parent's socket).
_inherited: list[Any] = []


def masked(url: str) -> str:
    """``url`` without its password, for messages and for recording where a catalog lives."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


def connection_lost(exc: BaseException, conn: Any = None) -> bool:
    """Whether ``exc`` means the connection (or the attempt to make one) failed, not the statement."""
    if not isinstance(exc, psycopg.OperationalError) or conflict(exc):
        return False
    if conn is not None and (conn.closed or conn.broken):
        return True
    state = getattr(exc, "sqlstate", None)
    # libpq's own failures (refused, reset, timed out) carry no server code.
    return state is None or state.startswith("08") or state in _LOST_STATES


def conflict(exc: BaseException) -> bool:
    """A serializable transaction that lost to a concurrent one: rolled back, safe to run again."""
    return isinstance(exc, (pg_errors.SerializationFailure, pg_errors.DeadlockDetected))


def connect_refused(exc: psycopg.OperationalError, where: str) -> InvalidInputError | None:
    """The user error for a connection the server refused for good, else None (worth a retry)."""
    text = str(exc)
    if "FATAL" not in text or not any(p in text for p in _REFUSED):
        return None
    reason = text.split("FATAL:", 1)[1].strip().splitlines()[0]
    return InvalidInputError(
        f"PostgreSQL at {where} refused the connection: {reason}. Check FACTORY_CATALOG (user, password, "
        "database); create the database first if it is new (createdb, or CREATE DATABASE), then run `factory init`"
    )


class Pool:
    """At most ``size`` open connections to one database; idle ones are reused (newest first)."""

    def __init__(self, url: str, *, size: int = 8, connect_timeout_s: float = 10.0):
        self.url = url
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    def _open(self) -> Any:
        options = psycopg.conninfo.conninfo_to_dict(self.url)
        options.setdefault("connect_timeout", max(1, round(self.connect_timeout_s)))
        options.setdefault("application_name", "factory")
        for key, value in (("keepalives", 1), ("keepalives_idle", 30), ("keepalives_interval", 10),
                           ("keepalives_count", 3)):
            options.setdefault(key, value)
        try:
            return psycopg.connect(autocommit=True, **options)
        except psycopg.OperationalError as exc:
            refused = connect_refused(exc, masked(self.url))
            if refused is not None:
                raise refused from None
            raise

    @contextmanager
    def connection(self, wait_s: float) -> Iterator[Any]:
        """A connection for one operation. One that failed is closed, and so is every idle one
        when the failure was a lost connection (after a server restart they are all dead)."""
        if not self._slots.acquire(timeout=wait_s):
            raise CatalogUnavailableError(
                f"all {self.size} connections to the catalog {masked(self.url)} stayed busy for {wait_s:.0f} s: "
                "fewer threads per process, or retry", masked(self.url),
            )
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._open()
            try:
                yield conn
            except BaseException as exc:
                if conn.closed or conn.broken or connection_lost(exc):
                    conn.close()
                    self.clear()
                else:
                    self._give_back(conn)
                raise
            self._give_back(conn)
        finally:
            self._slots.release()

    def _give_back(self, conn: Any) -> None:
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def pool_for(url: str, *, size: int, connect_timeout_s: float) -> Pool:
    """This process's pool for ``url`` (made on first use; a forked child makes its own)."""
    key = (os.getpid(), url)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            for (pid, _), other in list(_pools.items()):
                if pid != key[0]:
                    _inherited.extend(other._idle)
                    del _pools[(pid, _)]
            pool = _pools[key] = Pool(url, size=size, connect_timeout_s=connect_timeout_s)
        return pool


def forget_pools(url: str | None = None) -> None:
    """Close this process's idle connections (to ``url``, or to every database) and forget the pools."""
    with _pools_lock:
        keys = [k for k in _pools if url is None or k[1] == url]
        pools = [_pools.pop(k) for k in keys]
    for pool in pools:
        if pool is not None:
            pool.clear()
