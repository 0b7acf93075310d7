"""The catalog: refs with history and the artifact index, in one transactional store.

Blobs hold the truth (artifact records are blobs); the catalog indexes them and holds
the only mutable state, refs, which move by compare-and-swap. ``Catalog`` is the small
interface a server database could implement; ``SqliteCatalog`` is the embedded default
(WAL mode, so readers never block the writer, and ``BEGIN IMMEDIATE`` for every write,
so two writers serialise instead of losing an update).
"""

from __future__ import annotations

import abc
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from factory.errors import InvalidInputError, RefConflictError

__all__ = ["Catalog", "SqliteCatalog", "IndexedArtifact", "Ref", "RefChange"]


@dataclass(frozen=True)
class IndexedArtifact:
    digest: str
    kind: str
    name: str | None
    record_digest: str
    created_at: str


@dataclass(frozen=True)
class Ref:
    """A mutable name and the digest it points at now."""

    name: str
    target: str
    updated_at: str


@dataclass(frozen=True)
class RefChange:
    """One move of a ref: who moved it, when, from what, to what, and why."""

    name: str
    old: str | None
    new: str | None
    actor: str
    reason: str
    at: str


class Catalog(abc.ABC):
    """Refs and the artifact index. Implementations must make ``set_ref`` atomic."""

    # artifacts
    @abc.abstractmethod
    def add_artifact(self, entry: IndexedArtifact, parents: Sequence[str]) -> bool:
        """Index an artifact and its parent edges; False if the digest was already indexed."""

    @abc.abstractmethod
    def artifact(self, digest: str) -> IndexedArtifact | None: ...

    @abc.abstractmethod
    def artifacts(self, kind: str | None = None, name: str | None = None) -> list[IndexedArtifact]: ...

    @abc.abstractmethod
    def parents(self, digest: str) -> list[str]: ...

    @abc.abstractmethod
    def children(self, digest: str) -> list[str]: ...

    @abc.abstractmethod
    def digests_with_prefix(self, prefix: str, limit: int = 2) -> list[str]: ...

    # refs
    @abc.abstractmethod
    def ref(self, name: str) -> Ref | None: ...

    @abc.abstractmethod
    def set_ref(self, name: str, new: str | None, *, expected: str | None, actor: str, reason: str) -> RefChange:
        """Move ``name`` to ``new`` (None deletes) only if it points at ``expected`` now."""

    @abc.abstractmethod
    def refs(self, prefix: str = "") -> list[Ref]: ...

    @abc.abstractmethod
    def history(self, name: str) -> list[RefChange]:
        """Every change of ``name``, oldest first."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    record_digest TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_kind_name ON artifacts(kind, name);
CREATE TABLE IF NOT EXISTS edges (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    PRIMARY KEY (child, parent)
);
CREATE INDEX IF NOT EXISTS edges_parent ON edges(parent);
CREATE TABLE IF NOT EXISTS refs (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ref_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    old TEXT,
    new TEXT,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ref_history_name ON ref_history(name, seq);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SqliteCatalog(Catalog):
    """The embedded catalog: one SQLite file in WAL mode, safe across processes.

    A connection is opened per operation, so the object pickles (Ray ships it to
    actors) and is safe to share between threads.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            if write:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db
        finally:
            db.close()

    # -- artifacts -------------------------------------------------------------------
    def add_artifact(self, entry: IndexedArtifact, parents: Sequence[str]) -> bool:
        with self._connect(write=True) as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO artifacts(digest, kind, name, record_digest, created_at) VALUES (?,?,?,?,?)",
                (entry.digest, entry.kind, entry.name, entry.record_digest, entry.created_at),
            )
            if cur.rowcount == 0:
                return False
            db.executemany("INSERT OR IGNORE INTO edges(child, parent) VALUES (?,?)", [(entry.digest, p) for p in parents])
            return True

    def artifact(self, digest: str) -> IndexedArtifact | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT digest, kind, name, record_digest, created_at FROM artifacts WHERE digest=?", (digest,)
            ).fetchone()
        return IndexedArtifact(*row) if row else None

    def artifacts(self, kind: str | None = None, name: str | None = None) -> list[IndexedArtifact]:
        query = "SELECT digest, kind, name, record_digest, created_at FROM artifacts WHERE 1=1"
        args: list[str] = []
        if kind is not None:
            query += " AND kind=?"
            args.append(kind)
        if name is not None:
            query += " AND name=?"
            args.append(name)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at, digest", args).fetchall()
        return [IndexedArtifact(*row) for row in rows]

    def parents(self, digest: str) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT parent FROM edges WHERE child=? ORDER BY parent", (digest,))]

    def children(self, digest: str) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT child FROM edges WHERE parent=? ORDER BY child", (digest,))]

    def digests_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT digest FROM artifacts WHERE digest >= ? AND digest < ? ORDER BY digest LIMIT ?",
                (prefix, prefix + "\uffff", limit),
            ).fetchall()
        return [r[0] for r in rows]

    # -- refs ------------------------------------------------------------------------
    def ref(self, name: str) -> Ref | None:
        with self._connect() as db:
            row = db.execute("SELECT name, target, updated_at FROM refs WHERE name=?", (name,)).fetchone()
        return Ref(*row) if row else None

    def set_ref(self, name: str, new: str | None, *, expected: str | None, actor: str, reason: str) -> RefChange:
        at = _now()
        with self._connect(write=True) as db:
            row = db.execute("SELECT target FROM refs WHERE name=?", (name,)).fetchone()
            actual = row[0] if row else None
            if actual != expected:
                raise RefConflictError(
                    f"ref {name!r} points at {actual or 'nothing'}, not {expected or 'nothing'} as expected: "
                    "someone moved it first; re-read it and retry",
                    name,
                    expected,
                    actual,
                )
            if new is None:
                if actual is None:
                    raise InvalidInputError(f"ref {name!r} does not exist, so it cannot be deleted")
                db.execute("DELETE FROM refs WHERE name=?", (name,))
            else:
                db.execute(
                    "INSERT INTO refs(name, target, updated_at) VALUES (?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET target=excluded.target, updated_at=excluded.updated_at",
                    (name, new, at),
                )
            db.execute(
                "INSERT INTO ref_history(name, old, new, actor, reason, at) VALUES (?,?,?,?,?,?)",
                (name, actual, new, actor, reason, at),
            )
        return RefChange(name, actual, new, actor, reason, at)

    def refs(self, prefix: str = "") -> list[Ref]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT name, target, updated_at FROM refs WHERE name >= ? AND name < ? ORDER BY name",
                (prefix, prefix + "\uffff"),
            ).fetchall()
        return [Ref(*row) for row in rows]

    def history(self, name: str) -> list[RefChange]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT name, old, new, actor, reason, at FROM ref_history WHERE name=? ORDER BY seq", (name,)
            ).fetchall()
        return [RefChange(*row) for row in rows]
