"""``PostgresCatalog``: the catalog on a PostgreSQL server, so every node of a cluster can
record artifacts, move refs and run runs against one catalog.

Chosen by URL (``FACTORY_CATALOG=postgresql://user@host:5432/db``); the queries and the
migrations are SQLite's (``_sql.py``, ``_schema.py``). What the server adds:

- Write transactions run SERIALIZABLE. One that loses to a concurrent transaction
  (serialization failure, deadlock) was rolled back whole and runs again, so compare-and-
  swap, run keys and protection rules behave as under SQLite's single writer.
- Ref history and run events are numbered under a lock held until commit, so their
  numbers become visible in order and ``changes(since=)`` cursors never skip a row.
- Connections come from a small pool per process (``_pgconn.py``). A lost connection
  (server restart, network) is retried with backoff for up to ``retry_s``: reads, and
  writes whose transaction never reached COMMIT, run again on a new connection. A write
  whose COMMIT got no answer may or may not have happened: the ref, metadata and run
  writes look for their own change and return it if it landed, idempotent writes simply
  run again, and the rest (``log_append``) raise ``CatalogUnavailableError(in_doubt=True)``.
  Once the window has passed, ``CatalogUnavailableError`` (retryable) is raised.
- Opening never changes the schema. A server catalog is shared by processes that may run
  different factory versions, and the role that runs jobs may lack the right to create
  tables: an empty database is set up by ``factory init``, an older schema upgraded by
  ``factory catalog migrate`` (``CatalogNotReadyError`` says which, naming the command).
- It pickles as its URL and settings (Ray ships it to workers); connections stay per process.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from factory.errors import CatalogNotReadyError, CatalogUnavailableError
from factory.store import _pgconn
from factory.store._schema import LATEST, POSTGRES, Migration, check_version
from factory.store._sql import _CHANGE, SqlCatalog, _change
from factory.store.catalog import Catalog, RefChange, RunEvent, RunOwner, RunRecord, now_iso

__all__ = ["PostgresCatalog"]

# Transaction-level advisory locks (one namespace per purpose).
_LOCK_SCHEMA = 0x66_61_63_00
_LOCK_REF_HISTORY = 0x66_61_63_01
_LOCK_RUN_EVENTS = 0x66_61_63_02

_REPLAY = object()   # a write that may simply run again after an unanswered COMMIT
_MISSING = object()  # what a "did it land?" check returns when the change is not there


class _InDoubt(Exception):
    """The connection was lost while COMMIT was on its way: the write may or may not have happened."""


def _operation(method: Callable[..., Any], landed: Any = None) -> Callable[..., Any]:
    """``method`` run under the catalog's retry rules; ``landed`` says what to do after an unanswered
    COMMIT: ``_REPLAY`` (run it again), a check returning the result or ``_MISSING``, or None (raise)."""

    @functools.wraps(method)
    def operation(self: PostgresCatalog, *args: Any, **kwargs: Any) -> Any:
        check = landed if landed in (None, _REPLAY) else functools.partial(landed, self, *args, **kwargs)
        return self._retry(method.__name__, functools.partial(method, self, *args, **kwargs), check)

    return operation


class PostgresCatalog(SqlCatalog):
    """The catalog in the PostgreSQL database at ``url``.

    ``retry_s``: how long an operation keeps retrying a lost connection or a conflict;
    ``connect_timeout_s``: the limit on one connection attempt (unless the URL sets one);
    ``pool_size``: at most this many connections per process.
    """

    dialect = POSTGRES
    integrity_error = psycopg.IntegrityError

    def __init__(self, url: str, *, retry_s: float = 30.0, connect_timeout_s: float = 10.0, pool_size: int = 8):
        self.url = url
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.pool_size = pool_size
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresCatalog({self.location!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_ready"] = False  # checked again in the process that receives it
        return state

    @property
    def location(self) -> str:
        return _pgconn.masked(self.url)

    def close(self) -> None:
        """Close this process's idle connections to the database."""
        _pgconn.forget_pools(self.url)

    # -- connections and retries -------------------------------------------------------
    @contextmanager
    def _session(self, write: bool = False, isolation: str = "SERIALIZABLE") -> Iterator[Any]:
        pool = _pgconn.pool_for(self.url, size=self.pool_size, connect_timeout_s=self.connect_timeout_s)
        with pool.connection(self.retry_s) as conn:
            if not write:
                yield conn
                return
            conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
            try:
                yield conn
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass  # a lost connection: the server rolls back, the pool drops it, the error below tells
                raise
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                if _pgconn.connection_lost(exc, conn):
                    raise _InDoubt(str(exc)) from exc
                raise

    def _connect(self, write: bool = False) -> Any:
        if not self._ready:
            self._check_ready()
        if write:
            self._first_write()
        return self._session(write)

    def _retry(self, name: str, call: Callable[[], Any], landed: Any) -> Any:
        deadline = time.monotonic() + self.retry_s
        tries = 0
        while True:
            try:
                return call()
            except _InDoubt as exc:
                error = exc.__cause__ or exc
                if landed is None:
                    raise CatalogUnavailableError(
                        f"the connection to the catalog {self.location} was lost while {name} was committing: it may "
                        f"or may not have happened ({error}); read the current state before doing it again",
                        self.location, in_doubt=True,
                    ) from error
                if landed is not _REPLAY:
                    found = self._retry(f"{name} (did it land?)", landed, _REPLAY)
                    if found is not _MISSING:
                        return found
            except psycopg.Error as exc:
                if not (_pgconn.conflict(exc) or _pgconn.connection_lost(exc)):
                    raise
                error = exc
            tries += 1
            delay = min(1.0, 0.01 * 2 ** min(tries, 7)) * random.uniform(0.5, 1.5)
            if time.monotonic() + delay > deadline:
                what = ("kept conflicting with concurrent writers" if _pgconn.conflict(error)
                        else "could not be reached")
                raise CatalogUnavailableError(
                    f"the catalog {self.location} {what} for {self.retry_s:.0f} s ({tries} tries of {name}): "
                    f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}; "
                    "check that the server is up and reachable, then retry",
                    self.location,
                ) from error
            time.sleep(delay)

    # -- schema ------------------------------------------------------------------------
    def _stored_version(self) -> int:
        with self._session() as db:
            if db.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
                return 0
            return db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0

    def _check_ready(self) -> None:
        """Refuse a database that is not set up, or whose schema is not this factory's."""
        found = self._retry("schema check", self._stored_version, _REPLAY)
        check_version(found, self.location)
        if found == 0:
            raise CatalogNotReadyError(
                f"the PostgreSQL catalog {self.location} is not set up: run `factory init --catalog {self.location}` "
                "once (with --home naming the store home)", self.location, found, LATEST,
            )
        if found < LATEST:
            raise CatalogNotReadyError(
                f"the catalog {self.location} has schema version {found}; this factory needs version {LATEST}: run "
                f"`factory catalog migrate --catalog {self.location}` once (processes still on an older factory "
                "then refuse it until they are upgraded)", self.location, found, LATEST,
            )
        self._ready = True

    def _schema_transaction(self) -> Any:
        # READ COMMITTED: after waiting for the schema lock, the version read must see the
        # migration another process just committed.
        return self._session(write=True, isolation="READ COMMITTED")

    def _migrate(self, db: Any) -> list[Migration]:
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
        applied = super()._migrate(db)
        self._ready = False
        return applied

    def empty(self) -> bool:
        return self._stored_version() == 0 or super().empty()

    # -- numbering in commit order --------------------------------------------------------
    def _record_change(self, db: Any, *args: Any, **kwargs: Any) -> int:
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_REF_HISTORY,))
        return super()._record_change(db, *args, **kwargs)

    def _append_event(self, db: Any, *args: Any) -> RunEvent:
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_RUN_EVENTS,))
        return super()._append_event(db, *args)

    # -- writes that check whether an unanswered COMMIT landed ------------------------------
    def set_ref(self, name: str, new: str | None, *, expected: str | None, actor: str, reason: str,
                at: str | None = None) -> RefChange:
        at = at or now_iso()  # fixed here, so that the check below can find this very move
        return _set_ref(self, name, new, expected=expected, actor=actor, reason=reason, at=at)

    def _ref_moved(self, name: str, new: str | None, *, expected: str | None, actor: str, reason: str,
                   at: str | None = None) -> Any:
        row = self._one(f"SELECT {_CHANGE} FROM ref_history WHERE name=? AND actor=? AND at=? AND refused=0 "
                        "ORDER BY seq DESC LIMIT 1", (name, actor, at))
        change = _change(row) if row else None
        return change if change is not None and (change.old, change.new) == (expected, new) else _MISSING

    def _meta_set(self, key: str, value: str | None, *, expected: str | None = None) -> Any:
        return None if self.meta(key) == value else _MISSING

    def _run_started(self, run: RunRecord, *args: Any, **kwargs: Any) -> Any:
        return self.run_events(run.id)[0] if self.run(run.id) is not None else _MISSING

    def _run_claimed(self, run_id: str, expected: RunOwner, owner: RunOwner, **kwargs: Any) -> Any:
        record = self.run(run_id)
        return self.run_events(run_id)[-1] if record is not None and record.owner == owner else _MISSING

    def _event_added(self, run_id: str, owner: RunOwner, *, state: str, actor: str, at: str,
                     details: Mapping[str, Any]) -> Any:
        events = self.run_events(run_id)
        last = events[-1] if events else None
        return last if last is not None and (last.state, last.actor, last.at) == (state, actor, at) else _MISSING

    def _rule_set(self, pattern: str, actors: Sequence[str] | None, **kwargs: Any) -> Any:
        rule = next((r for r in self.ref_rules() if r.pattern == pattern), None)
        wanted = None if actors is None else tuple(sorted(set(actors)))
        return None if (rule.actors if rule else None) == wanted else _MISSING


_set_ref = _operation(SqlCatalog.set_ref, PostgresCatalog._ref_moved)

# Every operation of the interface runs under the retry rules. Reads, and writes that are
# harmless to run twice, run again after an unanswered COMMIT; the writes below check
# first; any operation not named here (a new one) raises rather than guess.
_CHECKS: dict[str, Any] = {
    "set_meta": PostgresCatalog._meta_set,
    "start_run": PostgresCatalog._run_started,
    "claim_run": PostgresCatalog._run_claimed,
    "run_event": PostgresCatalog._event_added,
    "set_ref_rule": PostgresCatalog._rule_set,
    "log_append": None,
}
_REPLAYABLE = {
    "schema_version", "migrate", "empty", "meta", "log_size", "log_read", "find_artifacts", "productions", "artifact",
    "artifacts", "parents", "children", "digests_with_prefix", "ref", "ref_rules", "refs", "history", "ref_changes",
    "run", "run_by_key", "runs", "run_events", "run_metrics", "run_outputs",
    # writes that change nothing the second time
    "add_artifact", "index_fields", "add_production", "heartbeat_run", "log_run_metrics", "add_run_output",
}
for _name in sorted((Catalog.__abstractmethods__ | _REPLAYABLE) - {"location", "backend", "before_first_write",
                                                                   "set_ref"}):
    setattr(PostgresCatalog, _name, _operation(getattr(PostgresCatalog, _name),
                                               _REPLAY if _name in _REPLAYABLE else _CHECKS.get(_name)))
