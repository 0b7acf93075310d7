"""The catalog: the artifact index, refs with history, runs, metadata and append-only logs.

Blobs hold the truth (artifact records are blobs); the catalog indexes them and holds
the only mutable state, refs and runs. ``Catalog`` is the interface; it and the records
it hands out live in ``_catalog_base.py`` (the layer the backends build on) and are
re-exported here. Implementations: ``SqliteCatalog`` (``_sqlite.py``, the embedded
default) and ``PostgresCatalog`` (``_postgres.py``, for a cluster), both on the portable
SQL of ``_sql.py``; ``open_catalog``, above them, picks one from a location.

Every write is one transaction. Times are ISO 8601 strings in UTC, given by the caller
(the store's clock) or, when left out, the wall clock.
"""

from __future__ import annotations

from factory.store._catalog_base import (
    Catalog,
    IndexedArtifact,
    MetricPoint,
    Ref,
    RefChange,
    RefRule,
    RunEvent,
    RunOwner,
    RunRecord,
    now_iso,
    to_iso,
)

__all__ = [
    "Catalog",
    "IndexedArtifact",
    "Ref",
    "RefChange",
    "RefRule",
    "RunOwner",
    "RunRecord",
    "RunEvent",
    "MetricPoint",
    "now_iso",
    "to_iso",
    "open_catalog",
    "catalog_backend",
]

_SERVER_SCHEMES = ("postgresql://", "postgres://")


def catalog_backend(location: str) -> str:
    """Which catalog a location names: ``postgresql`` for a ``postgresql://`` URL, ``sqlite`` for
    a path; any other URL is refused (it would otherwise become a file with a strange name)."""
    if location.startswith(_SERVER_SCHEMES):
        return "postgresql"
    if "://" in location:
        from factory.errors import InvalidInputError

        raise InvalidInputError(
            f"FACTORY_CATALOG={location!r} is neither a file path (the SQLite catalog) nor a postgresql:// URL: "
            "give e.g. /var/lib/factory/catalog.db or postgresql://user@host:5432/factory"
        )
    return "sqlite"


def open_catalog(location: str) -> Catalog:
    """The catalog at ``location``: a ``postgresql://`` URL or the path of a SQLite file.

    Nothing is created or connected to until the first operation."""
    if catalog_backend(location) == "postgresql":
        from factory.store._postgres import PostgresCatalog

        return PostgresCatalog(location)
    from factory.store._sqlite import SqliteCatalog

    return SqliteCatalog(location)
