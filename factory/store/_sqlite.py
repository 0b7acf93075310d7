"""``SqliteCatalog``: the embedded catalog, one SQLite file in WAL mode, safe across processes.

WAL mode lets readers run while one writer writes, and every write transaction starts
with ``BEGIN IMMEDIATE``, so two writers serialise instead of losing an update. The file
is created on the first write only: reading a catalog that does not exist yet reads an
empty one, so a command given bad input leaves nothing behind.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from factory.errors import InvalidInputError
from factory.store._schema import SQLITE
from factory.store._sql import SqlCatalog

__all__ = ["SqliteCatalog"]

_TIMEOUT_S = 60.0


class SqliteCatalog(SqlCatalog):
    """The embedded catalog at ``path``.

    A connection is opened per operation, so the object pickles (Ray ships it to
    actors) and is safe to share between threads.
    """

    dialect = SQLITE
    integrity_error = sqlite3.IntegrityError

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._ready = False

    def __repr__(self) -> str:
        return f"SqliteCatalog({self.path!r})"

    @property
    def location(self) -> str:
        return self.path

    def _open_db(self, path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={int(_TIMEOUT_S * 1000)}")
        return db

    def _stored_version(self) -> int:
        if not os.path.exists(self.path):
            return 0
        db = self._open_db(self.path)
        try:
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        except sqlite3.DatabaseError as exc:
            if "no such table" in str(exc):
                return 0  # made before versioning, or empty
            raise InvalidInputError(
                f"{self.path} is not a factory catalog ({exc}): point FACTORY_CATALOG at a catalog file or a new path"
            ) from exc
        finally:
            db.close()
        return row[0] or 0

    def _prepare(self) -> None:
        """Create the file (WAL mode) and bring its schema up to date; once per object.

        The embedded catalog upgrades itself: it lives beside one store on one machine,
        where upgrading factory is upgrading every process that uses it.
        """
        if self._needs_migration():
            self.migrate()
        self._ready = True

    @contextmanager
    def _schema_transaction(self) -> Iterator[sqlite3.Connection]:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = self._open_db(self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        with self._transaction(self.path) as db:
            yield db

    @contextmanager
    def _transaction(self, path: str) -> Iterator[sqlite3.Connection]:
        db = self._open_db(path)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not self._ready and not write and not os.path.exists(self.path):
            # Nothing stored yet: answer from an empty in-memory catalog, create no file.
            db = sqlite3.connect(":memory:", isolation_level=None)
            try:
                self._migrate(db)
                yield db
            finally:
                db.close()
            return
        if write:
            self._first_write()
        if not self._ready:
            self._prepare()
        if write:
            with self._transaction(self.path) as db:
                yield db
            return
        db = self._open_db(self.path)
        try:
            yield db
        finally:
            db.close()
