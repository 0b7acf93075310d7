"""The catalog's schema: versioned, upgraded on open, newer ones refused, portable SQL."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from factory.errors import CatalogVersionError, InvalidInputError
from factory.store import SqliteCatalog
from factory.store._schema import LATEST, MIGRATIONS, POSTGRES, SQLITE

# The catalog as factory wrote it before its schema had a version (main at 7a2120e).
_UNVERSIONED = """
CREATE TABLE artifacts (digest TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT, record_digest TEXT NOT NULL,
                        created_at TEXT NOT NULL);
CREATE INDEX artifacts_kind_name ON artifacts(kind, name);
CREATE TABLE edges (child TEXT NOT NULL, parent TEXT NOT NULL, PRIMARY KEY (child, parent));
CREATE INDEX edges_parent ON edges(parent);
CREATE TABLE refs (name TEXT PRIMARY KEY, target TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE ref_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, old TEXT, new TEXT,
                          actor TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX ref_history_name ON ref_history(name, seq);
"""
A = "sha256:" + "a" * 64


def _unversioned_catalog(path) -> None:
    db = sqlite3.connect(path)
    db.executescript(_UNVERSIONED)
    db.execute("INSERT INTO refs VALUES ('dataset/old', ?, '2026-01-01T00:00:00+00:00')", (A,))
    db.execute("INSERT INTO ref_history(name, old, new, actor, reason, at) "
               "VALUES ('dataset/old', NULL, ?, 'alice', 'first', '2026-01-01T00:00:00+00:00')", (A,))
    db.commit()
    db.close()


def test_a_catalog_from_before_versioning_is_upgraded_and_keeps_its_refs(tmp_path):
    """An existing store keeps working after an upgrade: its refs and history survive."""
    path = tmp_path / "catalog.db"
    _unversioned_catalog(path)
    catalog = SqliteCatalog(path)
    assert catalog.ref("dataset/old").target == A
    assert [(c.actor, c.reason) for c in catalog.history("dataset/old")] == [("alice", "first")]
    assert catalog.schema_version() == LATEST
    versions = [r[0] for r in sqlite3.connect(path).execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]


def test_a_newer_catalog_is_refused_naming_both_versions(tmp_path):
    """A catalog written by a newer factory is never opened (nor half-migrated) by an older one."""
    path = tmp_path / "catalog.db"
    SqliteCatalog(path).set_meta("store-id", "s1")
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'from the future', '2099-01-01')", (LATEST + 1,))
    db.commit()
    db.close()
    with pytest.raises(CatalogVersionError, match=rf"version {LATEST + 1}.*version {LATEST}.*upgrade factory"):
        SqliteCatalog(path).meta("store-id")


def test_a_file_that_is_not_a_catalog_is_a_clear_error(tmp_path):
    """FACTORY_CATALOG pointing at some other file says so instead of a raw SQLite error."""
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n" * 100)
    with pytest.raises(InvalidInputError, match="not a factory catalog"):
        SqliteCatalog(path).refs()


def test_reading_a_catalog_that_does_not_exist_creates_nothing(tmp_path):
    """Looking things up in a fresh home answers 'nothing' and writes no file."""
    path = tmp_path / "home" / "catalog.db"
    catalog = SqliteCatalog(path)
    assert catalog.ref("dataset/x") is None and catalog.refs() == [] and catalog.meta("k") is None
    assert catalog.digests_with_prefix("sha256:ab") == [] and catalog.log_size("l") == 0
    assert not (tmp_path / "home").exists()
    catalog.set_meta("k", "v")
    assert path.exists() and SqliteCatalog(path).meta("k") == "v"


@pytest.mark.parametrize("argv", [
    ["store", "get", "sha256:zz", "-o", "out.bin"],
    ["dataset", "add", "missing.csv", "--name", "base"],
    ["lineage", "sha256:" + "1" * 64],
    ["refs", "set", "dataset/x", "sha256:" + "1" * 64],
])
def test_bad_input_against_a_fresh_home_writes_no_catalog(tmp_path, argv):
    """A command that fails on bad input exits 2 and leaves the fresh home without a catalog."""
    home = tmp_path / "home"
    cmd = [sys.executable, "-m", "factory.runtime._entry", *argv, "--home", str(home)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert not (home / "catalog.db").exists()


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: f"v{m.version}")
def test_every_migration_renders_for_postgresql(migration):
    """The PostgreSQL catalog can run the same migration list: no SQLite-only syntax survives."""
    for statement in migration.statements:
        sql = POSTGRES.ddl(statement)
        assert "{" not in sql and "?" not in sql
        assert not re.search(r"AUTOINCREMENT|INSERT OR|REPLACE INTO|GLOB|datetime\(|strftime|json_", sql, re.I), sql


def test_migrations_are_numbered_in_order():
    """Versions are 1..N without gaps, so 'apply the ones after mine' is well defined."""
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    assert SQLITE.query("a=?") == "a=?" and POSTGRES.query("a=? AND b=?") == "a=%s AND b=%s"
