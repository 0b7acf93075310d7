"""Fixtures every test layer shares: a fresh store per test, on each catalog backend where asked.

A test module marked ``pytestmark = pytest.mark.catalogs`` runs every test that uses the
``store`` fixture (or ``catalog_location``/``store_settings``) twice: once with the SQLite
catalog in the home, once with a fresh database on a throwaway PostgreSQL server started
for the session (see ``_postgres.py``). Other modules get SQLite only.
"""

from __future__ import annotations

import pytest

from factory.settings import Settings

CATALOG_BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config):
    config.addinivalue_line("markers", "catalogs: run once against each catalog backend (SQLite, PostgreSQL)")


def pytest_generate_tests(metafunc):
    if "catalog_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("catalogs"):
        metafunc.parametrize("catalog_backend", CATALOG_BACKENDS)


@pytest.fixture
def catalog_backend() -> str:
    """The catalog backend of this test: SQLite unless the module is marked ``catalogs``."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 for the whole session, removed after it."""
    from _postgres import serving

    yield from serving()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database holding the catalog schema (no store id yet), dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def catalog_location(request, catalog_backend, tmp_path) -> str:
    """Where this test's store keeps its catalog: the SQLite file in its home, or a fresh PostgreSQL database."""
    if catalog_backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "home" / "catalog.db")


@pytest.fixture
def store_settings(tmp_path, catalog_location) -> Settings:
    """Settings of a fresh store under the test's own temporary folder, on this test's catalog."""
    return Settings(home=str(tmp_path / "home"), catalog=catalog_location)


@pytest.fixture
def store(store_settings):
    """A fresh store under the test's own temporary folder."""
    from factory.store import Store

    return Store(store_settings.home, settings=store_settings)
