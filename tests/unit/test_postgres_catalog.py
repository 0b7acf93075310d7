"""The PostgreSQL catalog's own rules: set up and upgraded only on purpose, byte-order text,
change numbers in commit order, clear errors for a URL that cannot be used, pickling."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading

import psycopg
import pytest

from factory.errors import CatalogNotReadyError, CatalogVersionError, InvalidInputError
from factory.settings import Settings
from factory.store import Store
from factory.store._postgres import PostgresCatalog
from factory.store._schema import LATEST, MIGRATIONS, POSTGRES, VERSION_TABLE
from factory.store.catalog import open_catalog

EXE = os.path.join(os.path.dirname(sys.executable), "factory")
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.fixture
def empty_url(postgres_server):
    """A database with nothing in it: no catalog schema."""
    url = postgres_server.create_database(schema=False)
    yield url
    postgres_server.drop_database(url)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})


def _schema_at(url: str, version: int) -> None:
    """Build the catalog as factory would have at schema ``version`` (an older release)."""
    with psycopg.connect(url) as db:
        db.execute(VERSION_TABLE)
        for migration in MIGRATIONS[:version]:
            for statement in migration.statements:
                db.execute(POSTGRES.ddl(statement))
            db.execute("INSERT INTO schema_version VALUES (%s, %s, '2026-01-01')", (migration.version, migration.summary))


def test_an_empty_database_is_set_up_by_factory_init_and_by_nothing_else(empty_url, tmp_path):
    """Reads and writes against a new PostgreSQL database say to run `factory init`; after it, the store works."""
    home = str(tmp_path / "home")
    store = Store(settings=Settings(home=home, catalog=empty_url))
    with pytest.raises(CatalogNotReadyError, match="not set up: run `factory init"):
        store.refs.list()
    with pytest.raises(CatalogNotReadyError, match="factory init"):
        store.put_blob(b"first")
    assert not os.path.exists(os.path.join(home, "STORE_ID"))
    made = cli("init", "--home", home, "--catalog", empty_url)
    assert made.returncode == 0, made.stderr
    assert "(new)" in made.stdout and f"schema version {LATEST}" in made.stdout
    store = Store(settings=Settings(home=home, catalog=empty_url))
    blob = store.put_blob(b"first").digest
    info = json.loads(cli("catalog", "info", "--home", home, "--catalog", empty_url, "--json").stdout)
    assert info["backend"] == "postgresql" and info["schema_version"] == LATEST and info["matches"] is True
    assert [a.digest for a in Store(settings=Settings(home=home, catalog=empty_url)).artifacts.find("blob")] == [blob]


def test_an_older_schema_is_refused_until_factory_catalog_migrate_upgrades_it(empty_url):
    """Opening never upgrades a shared catalog; `factory catalog migrate` does, and keeps what it held."""
    _schema_at(empty_url, 4)
    with psycopg.connect(empty_url) as db:
        db.execute("INSERT INTO refs VALUES ('dataset/old', %s, '2026-01-01')", (A,))
    with pytest.raises(CatalogNotReadyError, match=f"schema version 4; this factory needs version {LATEST}: "
                                                   "run `factory catalog migrate"):
        PostgresCatalog(empty_url).refs()
    migrated = cli("catalog", "migrate", "--catalog", empty_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied migrations {', '.join(str(v) for v in range(5, LATEST + 1))}" in migrated.stdout
    catalog = PostgresCatalog(empty_url)
    assert catalog.ref("dataset/old").target == A and catalog.schema_version() == LATEST
    assert "up to date" in cli("catalog", "migrate", "--catalog", empty_url).stdout


def test_a_newer_schema_is_refused_naming_both_versions(postgres_url):
    """A catalog migrated by a newer factory is never used by an older one."""
    with psycopg.connect(postgres_url) as db:
        db.execute("INSERT INTO schema_version VALUES (%s, 'from the future', '2099-01-01')", (LATEST + 1,))
    with pytest.raises(CatalogVersionError, match=rf"version {LATEST + 1}.*version {LATEST}.*upgrade factory"):
        PostgresCatalog(postgres_url).refs()


def test_text_sorts_byte_by_byte_whatever_the_database_locale(postgres_server):
    """Prefix listings and their order are SQLite's even in a database whose default collation is en-US."""
    url = postgres_server.url(f"icu_{os.getpid()}")
    name = url.rsplit("/", 1)[1]
    postgres_server.sql(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    try:
        catalog = PostgresCatalog(url)
        catalog.migrate()
        names = ["a-b", "a/b", "a/c", "a/\u00e9", "aB", "ab", "a", "b"]
        for n in names:
            catalog.set_ref(n, A, expected=None, actor="t", reason="")
        assert [r.name for r in catalog.refs()] == sorted(names)
        assert [r.name for r in catalog.refs("a/")] == ["a/b", "a/c", "a/\u00e9"]
        assert [c.name for c in catalog.ref_changes(prefix="a/")] == ["a/b", "a/c", "a/\u00e9"]
    finally:
        postgres_server.drop_database(url)


def test_a_watcher_following_changes_never_skips_one_committed_late(postgres_url):
    """A move numbered first but committed last is still seen by a `changes(since=)` cursor."""
    slow_started, fast_done = threading.Event(), threading.Event()

    class SlowCommit(PostgresCatalog):
        def _record_change(self, db, *args, **kwargs):
            seq = super()._record_change(db, *args, **kwargs)
            slow_started.set()
            fast_done.wait(timeout=1.0)  # hold the transaction open while the other move tries to commit
            return seq

    watcher = PostgresCatalog(postgres_url)
    seen: list[int] = []
    slow = threading.Thread(target=SlowCommit(postgres_url).set_ref, args=("slow", A),
                            kwargs={"expected": None, "actor": "t", "reason": ""})
    fast = threading.Thread(target=lambda: (PostgresCatalog(postgres_url).set_ref("fast", B, expected=None, actor="t",
                                                                                 reason=""), fast_done.set()))
    slow.start()
    assert slow_started.wait(timeout=60)
    fast.start()
    fast_done.wait(timeout=0.5)
    seen += [c.seq for c in watcher.ref_changes(since=0)]
    slow.join(timeout=60)
    fast.join(timeout=60)
    seen += [c.seq for c in watcher.ref_changes(since=max(seen, default=0))]
    assert sorted(seen) == sorted(c.seq for c in watcher.ref_changes()) and len(seen) == 2


def test_a_catalog_url_that_cannot_be_used_is_a_clear_error(postgres_server):
    """A typo in FACTORY_CATALOG is one line that names the problem, at once, not a retry loop."""
    with pytest.raises(InvalidInputError, match="neither a file path .* nor a postgresql:// URL"):
        open_catalog("mysql://db/factory")
    assert open_catalog("postgres://u@h/db").backend == "postgresql" and open_catalog("x/c.db").backend == "sqlite"
    with pytest.raises(InvalidInputError, match='database "no_such_db" does not exist.*createdb'):
        PostgresCatalog(postgres_server.url("no_such_db")).refs()


def test_the_catalog_pickles_as_its_url_and_hides_the_password(postgres_url):
    """Ray ships the catalog to workers: it travels as a URL and works there; messages never show a password."""
    catalog = PostgresCatalog(postgres_url)
    catalog.set_ref("x", A, expected=None, actor="t", reason="")
    shipped = pickle.loads(pickle.dumps(catalog))
    assert shipped.ref("x").target == A
    secret = PostgresCatalog("postgresql://app:s3cret@db.internal:5432/factory")
    assert "s3cret" not in secret.location and "s3cret" not in repr(secret)
    assert secret.location == "postgresql://app:***@db.internal:5432/factory"
