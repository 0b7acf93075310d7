"""``SqlCatalog``: the catalog's queries in portable SQL, over any DB-API connection.

A subclass supplies the connection (``_connect``), its dialect, the version probe and
the driver's integrity-error class; everything else (the migrations included) is here,
so SQLite and PostgreSQL run the same statements. See ``_schema.py`` for the rules the
SQL follows.

Compare-and-swap (refs, metadata, run ownership) reads and writes in one transaction.
SQLite serialises write transactions (``BEGIN IMMEDIATE``); ``PostgresCatalog`` gives the
same guarantee by running write transactions SERIALIZABLE and retrying a serialization
failure. Sequence numbers (``seq``) must also become visible in order, which
``changes(since=)`` and ``events(since=)`` rely on: SQLite's single writer does that;
PostgreSQL numbers rows when they are inserted, not when they commit, so
``PostgresCatalog`` numbers ref history and run events under a lock held to commit.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from factory.errors import InvalidInputError, MetaConflictError, RefConflictError, RefProtectedError
from factory.store._refnames import pattern_matches
from factory.store._schema import LATEST, MIGRATIONS, VERSION_TABLE, Dialect, Migration, check_version
from factory.store._sql_runs import SqlRuns
from factory.store.catalog import Catalog, IndexedArtifact, Ref, RefChange, RefRule, now_iso

__all__ = ["SqlCatalog"]

_ARTIFACT = "digest, kind, name, record_digest, created_at"
_CHANGE = "name, old, new, actor, reason, at, seq, refused"


def _change(row: Sequence[Any]) -> RefChange:
    *fields, refused = row
    return RefChange(*fields, refused=bool(refused))


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds for ``col >= lo AND col < hi``: a prefix match that uses the index (no LIKE escaping)."""
    return prefix, prefix + "\uffff"


class SqlCatalog(SqlRuns, Catalog):
    """Catalog operations in portable SQL; subclasses bring the connection."""

    dialect: Dialect
    #: the exception a UNIQUE or PRIMARY KEY violation raises in this driver
    integrity_error: type[BaseException]

    @abc.abstractmethod
    def _connect(self, write: bool = False) -> AbstractContextManager[Any]:
        """A connection; with ``write``, inside one transaction committed on exit."""

    @abc.abstractmethod
    def _stored_version(self) -> int:
        """The highest applied migration, 0 for a catalog without a version table."""

    @abc.abstractmethod
    def _schema_transaction(self) -> AbstractContextManager[Any]:
        """A write transaction for schema changes (creating the catalog if it does not exist)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where this catalog lives, for messages."""

    @property
    def backend(self) -> str:
        return self.dialect.name

    #: run once, just before this object's first write (the store records its identity there)
    _before_first_write: Callable[[], None] | None = None

    def before_first_write(self, hook: Callable[[], None] | None) -> None:
        """Run ``hook`` once, before the first write through this object (not after unpickling)."""
        self._before_first_write = hook

    def _first_write(self) -> None:
        """Called by ``_connect(write=True)`` before it opens the transaction."""
        hook, self._before_first_write = self._before_first_write, None
        if hook is not None:
            try:
                hook()
            except BaseException:
                self._before_first_write = hook  # a refused write leaves the check armed for the next one
                raise

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_before_first_write", None)
        return state

    # -- helpers ---------------------------------------------------------------------
    def _run(self, db: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        return db.execute(self.dialect.query(sql), tuple(args))

    def _many(self, db: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            db.cursor().executemany(self.dialect.query(sql), [tuple(r) for r in rows])

    def _compare(self, db: Any, sql: str, key: str, expected: str | None,
                 conflict: Callable[[str | None], Exception]) -> str | None:
        """The compare of a compare-and-swap: the value ``sql`` reads for ``key``, if it is ``expected``."""
        row = self._run(db, sql, (key,)).fetchone()
        actual = row[0] if row else None
        if actual != expected:
            raise conflict(actual)
        return actual

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._connect() as db:
            return self._run(db, sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._connect() as db:
            return self._run(db, sql, args).fetchall()

    # -- schema ----------------------------------------------------------------------
    def schema_version(self) -> int:
        return self._stored_version()

    def migrate(self) -> list[Migration]:
        """Apply the migrations this catalog lacks, in one transaction (creating it if it does
        not exist); the ones applied, none if it was up to date."""
        with self._schema_transaction() as db:
            return self._migrate(db)

    def _migrate(self, db: Any) -> list[Migration]:
        """Bring the schema up to date inside the caller's write transaction; the migrations applied."""
        db.execute(VERSION_TABLE)
        row = self._run(db, "SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        check_version(current, self.location)
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                db.execute(self.dialect.ddl(statement))
            self._run(db, "INSERT INTO schema_version(version, summary, applied_at) VALUES (?,?,?)",
                      (migration.version, migration.summary, now_iso()))
        return list(MIGRATIONS[current:])

    def empty(self) -> bool:
        """True if the catalog holds no artifact and no ref (one that does not exist yet is empty)."""
        return self._one("SELECT 1 FROM artifacts UNION ALL SELECT 1 FROM refs LIMIT 1") is None

    def _needs_migration(self) -> bool:
        found = self._stored_version()
        check_version(found, self.location)
        return found < LATEST

    # -- metadata --------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None, *, expected: str | None = None) -> None:
        with self._connect(write=True) as db:
            actual = self._compare(db, "SELECT value FROM meta WHERE key=?", key, expected, lambda actual: MetaConflictError(
                f"catalog metadata {key!r} holds {actual!r}, not {expected!r} as expected: "
                "another process set it first; re-read it and retry",
                key, expected, actual,
            ))
            if value is None:
                self._run(db, "DELETE FROM meta WHERE key=?", (key,))
            elif actual is None:
                self._run(db, "INSERT INTO meta(key, value) VALUES (?,?)", (key, value))
            else:
                self._run(db, "UPDATE meta SET value=? WHERE key=?", (value, key))

    # -- append-only logs ------------------------------------------------------------
    def log_append(self, log: str, entries: Sequence[bytes]) -> int:
        entries = [bytes(e) for e in entries]
        with self._connect(write=True) as db:
            self._run(db, "INSERT INTO log_heads(log, size) VALUES (?, 0) ON CONFLICT (log) DO NOTHING", (log,))
            # The UPDATE takes the head's row lock first, so concurrent appends serialise here.
            self._run(db, "UPDATE log_heads SET size = size + ? WHERE log=?", (len(entries), log))
            end = self._run(db, "SELECT size FROM log_heads WHERE log=?", (log,)).fetchone()[0]
            first = end - len(entries)
            self._many(db, "INSERT INTO log_entries(log, idx, entry) VALUES (?,?,?)",
                       [(log, first + i, e) for i, e in enumerate(entries)])
        return first

    def log_size(self, log: str) -> int:
        row = self._one("SELECT size FROM log_heads WHERE log=?", (log,))
        return row[0] if row else 0

    def log_read(self, log: str, start: int = 0, end: int | None = None) -> list[bytes]:
        if start < 0 or (end is not None and end < start):
            raise InvalidInputError(f"log range [{start}, {end}) is not a range: give 0 <= start <= end")
        rows = self._all(
            "SELECT entry FROM log_entries WHERE log=? AND idx >= ? AND idx < ? ORDER BY idx",
            (log, start, end if end is not None else 2**62),
        )
        return [bytes(r[0]) for r in rows]

    # -- artifacts -------------------------------------------------------------------
    def add_artifact(self, entry: IndexedArtifact, parents: Sequence[str],
                     fields: Mapping[str, str] | None = None) -> bool:
        with self._connect(write=True) as db:
            if self._run(db, "SELECT 1 FROM artifacts WHERE digest=?", (entry.digest,)).fetchone():
                return False
            self._insert_artifact(db, entry, parents, fields)
            return True

    def _insert_artifact(self, db: Any, entry: IndexedArtifact, parents: Sequence[str],
                         fields: Mapping[str, str] | None) -> None:
        self._run(db, f"INSERT INTO artifacts({_ARTIFACT}) VALUES (?,?,?,?,?)",
                  (entry.digest, entry.kind, entry.name, entry.record_digest, entry.created_at))
        self._add_production(db, entry.digest, entry.record_digest, entry.created_at, parents)
        self._index_fields(db, [(entry.digest, f, v) for f, v in (fields or {}).items()])

    def index_fields(self, rows: Sequence[tuple[str, str, str]]) -> None:
        with self._connect(write=True) as db:
            self._index_fields(db, rows)

    def _index_fields(self, db: Any, rows: Sequence[tuple[str, str, str]]) -> None:
        self._many(db, "INSERT INTO artifact_fields(digest, field, value) VALUES (?,?,?) "
                       "ON CONFLICT (digest, field) DO NOTHING", rows)

    def find_artifacts(self, kind: str | None = None, name: str | None = None,
                       where: Mapping[str, str] | None = None, limit: int | None = None) -> list[IndexedArtifact]:
        columns = ", ".join(f"a.{c.strip()}" for c in _ARTIFACT.split(","))
        matches = list((where or {}).items())
        args: list[Any] = []
        if matches:
            # The field index answers the matches (one covering range scan each, intersected)
            # before any artifact row is read. CROSS JOIN keeps SQLite from starting at the
            # artifacts table instead; PostgreSQL plans it as the inner join it is.
            matching = " INTERSECT ".join(["SELECT digest FROM artifact_fields WHERE field = ? AND value = ?"] * len(matches))
            query = f"SELECT {columns} FROM ({matching}) m CROSS JOIN artifacts a WHERE a.digest = m.digest"
            for field, value in matches:
                args += [field, value]
        else:
            query = f"SELECT {columns} FROM artifacts a WHERE 1=1"
        for column, value in (("kind", kind), ("name", name)):
            if value is not None:
                query += f" AND a.{column} = ?"
                args.append(value)
        query += " ORDER BY a.created_at, a.digest"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        return [IndexedArtifact(*row) for row in self._all(query, args)]

    def add_production(self, digest: str, record_digest: str, created_at: str, parents: Sequence[str]) -> bool:
        with self._connect(write=True) as db:
            known = {r[0] for r in self._run(db, "SELECT parent FROM edges WHERE child=?", (digest,))}
            if set(parents) <= known:
                return False
            self._add_production(db, digest, record_digest, created_at, parents)
            return True

    def _add_production(self, db: Any, digest: str, record_digest: str, created_at: str,
                        parents: Sequence[str]) -> None:
        self._run(db, "INSERT INTO productions(digest, record_digest, created_at) VALUES (?,?,?)",
                  (digest, record_digest, created_at))
        self._add_edges(db, digest, parents)

    def productions(self, digest: str) -> list[str]:
        rows = self._all("SELECT record_digest FROM productions WHERE digest=? ORDER BY seq",
                         (digest,))
        return [r[0] for r in rows]

    def _add_edges(self, db: Any, child: str, parents: Sequence[str]) -> None:
        self._many(db, "INSERT INTO edges(child, parent) VALUES (?,?) ON CONFLICT (child, parent) DO NOTHING",
                   [(child, p) for p in parents])

    def artifact(self, digest: str) -> IndexedArtifact | None:
        row = self._one(f"SELECT {_ARTIFACT} FROM artifacts WHERE digest=?", (digest,))
        return IndexedArtifact(*row) if row else None

    def artifacts(self, kind: str | None = None, name: str | None = None) -> list[IndexedArtifact]:
        return self.find_artifacts(kind, name)

    def parents(self, digest: str) -> list[str]:
        return [r[0] for r in self._all("SELECT parent FROM edges WHERE child=? ORDER BY parent", (digest,))]

    def children(self, digest: str) -> list[str]:
        return [r[0] for r in self._all("SELECT child FROM edges WHERE parent=? ORDER BY child", (digest,))]

    def digests_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        rows = self._all("SELECT digest FROM artifacts WHERE digest >= ? AND digest < ? ORDER BY digest LIMIT ?",
                         (*_prefix_range(prefix), limit))
        return [r[0] for r in rows]

    # -- refs ------------------------------------------------------------------------
    def ref(self, name: str) -> Ref | None:
        row = self._one("SELECT name, target, updated_at FROM refs WHERE name=?", (name,))
        return Ref(*row) if row else None

    def set_ref(self, name: str, new: str | None, *, expected: str | None, actor: str, reason: str,
                at: str | None = None) -> RefChange:
        at = at or now_iso()
        with self._connect(write=True) as db:
            rule = self._refusing_rule(db, name, actor)
            if rule is not None:
                # Recorded like a move, committed, and only then raised.
                actual = self._run(db, "SELECT target FROM refs WHERE name=?", (name,)).fetchone()
                why = (f"refused: refs matching {rule.pattern} move only for {', '.join(rule.actors)}"
                       + (f" (asked: {reason})" if reason else ""))
                self._record_change(db, name, actual[0] if actual else None, new, actor, why, at, refused=True)
            else:
                actual = self._compare(db, "SELECT target FROM refs WHERE name=?", name, expected, lambda actual: RefConflictError(
                    f"ref {name!r} points at {actual or 'nothing'}, not {expected or 'nothing'} as expected: "
                    "someone moved it first; re-read it and retry",
                    name, expected, actual,
                ))
                if new is None:
                    if actual is None:
                        raise InvalidInputError(f"ref {name!r} does not exist, so it cannot be deleted")
                    self._run(db, "DELETE FROM refs WHERE name=?", (name,))
                elif actual is None:
                    self._run(db, "INSERT INTO refs(name, target, updated_at) VALUES (?,?,?)", (name, new, at))
                else:
                    self._run(db, "UPDATE refs SET target=?, updated_at=? WHERE name=?", (new, at, name))
                seq = self._record_change(db, name, actual, new, actor, reason, at)
        if rule is not None:
            raise RefProtectedError(
                f"{actor} may not move {name}: refs matching {rule.pattern} move only for {', '.join(rule.actors)}. "
                "Ask one of them (the controller promotes through it), or, if you act for one, set FACTORY_ACTOR; "
                "the refusal is recorded in the ref's history",
                name, actor, rule.pattern,
            )
        return RefChange(name, actual, new, actor, reason, at, seq)

    def _record_change(self, db: Any, name: str, old: str | None, new: str | None, actor: str, reason: str,
                       at: str, *, refused: bool = False) -> int:
        return self._run(
            db, "INSERT INTO ref_history(name, old, new, actor, reason, at, refused) VALUES (?,?,?,?,?,?,?) RETURNING seq",
            (name, old, new, actor, reason, at, int(refused)),
        ).fetchone()[0]

    # -- protection rules --------------------------------------------------------------
    def _rules(self, db: Any) -> list[RefRule]:
        rows = self._run(db, "SELECT pattern, actors, updated_by, updated_at FROM ref_rules ORDER BY pattern").fetchall()
        return [RefRule(p, tuple(json.loads(a)), by, at) for p, a, by, at in rows]

    def _refusing_rule(self, db: Any, name: str, actor: str) -> RefRule | None:
        """The first rule matching ``name`` that does not list ``actor`` (every matching rule must)."""
        for rule in self._rules(db):
            if pattern_matches(rule.pattern, name) and actor not in rule.actors:
                return rule
        return None

    def ref_rules(self) -> list[RefRule]:
        with self._connect() as db:
            return self._rules(db)

    def set_ref_rule(self, pattern: str, actors: Sequence[str] | None, *, actor: str, at: str | None = None) -> None:
        with self._connect(write=True) as db:
            current = next((r for r in self._rules(db) if r.pattern == pattern), None)
            if current is not None and actor not in current.actors:
                raise RefProtectedError(
                    f"{actor} may not change the rule for {pattern}: only {', '.join(current.actors)} may; "
                    "ask one of them, or set FACTORY_ACTOR if you act for one",
                    pattern, actor, pattern,
                )
            if current is not None:
                self._run(db, "DELETE FROM ref_rules WHERE pattern=?", (pattern,))
            if actors is not None:
                self._run(db, "INSERT INTO ref_rules(pattern, actors, updated_by, updated_at) VALUES (?,?,?,?)",
                          (pattern, json.dumps(sorted(set(actors))), actor, at or now_iso()))

    def refs(self, prefix: str = "") -> list[Ref]:
        rows = self._all("SELECT name, target, updated_at FROM refs WHERE name >= ? AND name < ? ORDER BY name",
                         _prefix_range(prefix))
        return [Ref(*row) for row in rows]

    def history(self, name: str, *, refused: bool = False) -> list[RefChange]:
        moves = "" if refused else " AND refused = 0"
        rows = self._all(f"SELECT {_CHANGE} FROM ref_history WHERE name=?{moves} ORDER BY seq", (name,))
        return [_change(row) for row in rows]

    def ref_changes(self, since: int = 0, prefix: str = "") -> list[RefChange]:
        rows = self._all(f"SELECT {_CHANGE} FROM ref_history WHERE seq > ? AND name >= ? AND name < ? "
                         "AND refused = 0 ORDER BY seq", (since, *_prefix_range(prefix)))
        return [_change(row) for row in rows]

