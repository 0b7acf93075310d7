"""The catalog: the artifact index, refs with history, runs, metadata and append-only logs.

Blobs hold the truth (artifact records are blobs); the catalog indexes them and holds
the only mutable state, refs and runs. ``Catalog`` is the interface, and the records
below are what it hands out. Implementations: ``SqliteCatalog`` (``_sqlite.py``, the
embedded default) on the portable SQL of ``_sql.py``, which a server database reuses.

Every write is one transaction. Times are ISO 8601 strings in UTC, given by the caller
(the store's clock) or, when left out, the wall clock.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Catalog", "IndexedArtifact", "Ref", "RefChange", "now_iso", "to_iso"]


def to_iso(moment: datetime) -> str:
    """The one text form of a time in the catalog: UTC, microseconds, sortable as text."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone: give times in UTC (datetime.now(UTC))")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_iso() -> str:
    return to_iso(datetime.now(UTC))


@dataclass(frozen=True)
class IndexedArtifact:
    """An artifact as the catalog indexes it; the full record is the blob ``record_digest``."""

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
    """One move of a ref: who moved it, when, from what, to what, and why.

    ``seq`` orders every change of every ref (``changes(since=seq)`` reads on from one).
    """

    name: str
    old: str | None
    new: str | None
    actor: str
    reason: str
    at: str
    seq: int = 0


class Catalog(abc.ABC):
    """The catalog's operations. Implementations make each write atomic."""

    # -- schema ----------------------------------------------------------------------
    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version of this catalog (0 if it holds nothing yet)."""

    # -- metadata --------------------------------------------------------------------
    @abc.abstractmethod
    def meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: str | None, *, expected: str | None = None) -> None:
        """Set ``key`` to ``value`` (None deletes it) only if it holds ``expected`` now
        (None: only if it is not set); else raise ``MetaConflictError``."""

    # -- append-only logs ------------------------------------------------------------
    @abc.abstractmethod
    def log_append(self, log: str, entries: Sequence[bytes]) -> int:
        """Append ``entries`` to ``log`` in one transaction; the index of the first one."""

    @abc.abstractmethod
    def log_size(self, log: str) -> int: ...

    @abc.abstractmethod
    def log_read(self, log: str, start: int = 0, end: int | None = None) -> list[bytes]:
        """Entries ``start`` (inclusive) to ``end`` (exclusive; None: to the end)."""

    # -- artifacts -------------------------------------------------------------------
    @abc.abstractmethod
    def add_artifact(self, entry: IndexedArtifact, parents: Sequence[str]) -> bool:
        """Index an artifact and its parent edges; False if the digest was already indexed."""

    @abc.abstractmethod
    def add_production(self, digest: str, record_digest: str, created_at: str, parents: Sequence[str]) -> bool:
        """Record another production of a known artifact and its parent edges; False (and
        nothing written) if every one of ``parents`` is recorded already."""

    @abc.abstractmethod
    def productions(self, digest: str) -> list[str]:
        """The record digests of every production of ``digest``, oldest first."""

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

    # -- refs ------------------------------------------------------------------------
    @abc.abstractmethod
    def ref(self, name: str) -> Ref | None: ...

    @abc.abstractmethod
    def set_ref(self, name: str, new: str | None, *, expected: str | None, actor: str, reason: str,
                at: str | None = None) -> RefChange:
        """Move ``name`` to ``new`` (None deletes) only if it points at ``expected`` now."""

    @abc.abstractmethod
    def refs(self, prefix: str = "") -> list[Ref]: ...

    @abc.abstractmethod
    def history(self, name: str) -> list[RefChange]:
        """Every change of ``name``, oldest first."""
