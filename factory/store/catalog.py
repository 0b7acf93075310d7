"""The catalog: the artifact index, refs with history, runs, metadata and append-only logs.

Blobs hold the truth (artifact records are blobs); the catalog indexes them and holds
the only mutable state, refs and runs. ``Catalog`` is the interface, and the records
below are what it hands out. Implementations: ``SqliteCatalog`` (``_sqlite.py``, the
embedded default) and ``PostgresCatalog`` (``_postgres.py``, for a cluster), both on the
portable SQL of ``_sql.py``; ``open_catalog`` picks one from a location.

Every write is one transaction. Times are ISO 8601 strings in UTC, given by the caller
(the store's clock) or, when left out, the wall clock.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    ``refused`` marks a move that a protection rule refused: the ref stayed at ``old``,
    ``new`` is where the actor tried to move it and ``reason`` says why it was refused.
    """

    name: str
    old: str | None
    new: str | None
    actor: str
    reason: str
    at: str
    seq: int = 0
    refused: bool = False


@dataclass(frozen=True)
class RefRule:
    """A protection rule: refs matching ``pattern`` move only for ``actors``."""

    pattern: str
    actors: tuple[str, ...]
    updated_by: str
    updated_at: str


@dataclass(frozen=True)
class RunOwner:
    """The process that runs a run: its host, pid and start time (so a reused pid is not it)."""

    host: str
    pid: int
    started: float

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class RunRecord:
    """A run as the catalog holds it. ``state`` is the last state recorded by an event."""

    id: str
    kind: str
    key: str | None
    name: str | None
    digest: str
    state: str
    owner: RunOwner
    heartbeat_at: str
    started_at: str
    updated_at: str


@dataclass(frozen=True)
class RunEvent:
    """One state change of a run: who, when, and any details. ``seq`` orders all events."""

    seq: int
    run_id: str
    state: str
    actor: str
    at: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPoint:
    """One value of one metric at one step of a run."""

    step: int
    name: str
    value: float
    at: str


class Catalog(abc.ABC):
    """The catalog's operations. Implementations make each write atomic."""

    # -- schema ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where this catalog lives (a path, or a URL without its password)."""

    @property
    @abc.abstractmethod
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version of this catalog (0 if it holds nothing yet)."""

    @abc.abstractmethod
    def migrate(self) -> Sequence[Any]:
        """Apply the migrations this catalog lacks; the ones applied (none if up to date)."""

    @abc.abstractmethod
    def empty(self) -> bool:
        """True if the catalog holds no artifact and no ref, or does not exist yet."""

    @abc.abstractmethod
    def before_first_write(self, hook: Any) -> None:
        """Run ``hook()`` once, just before the first write made through this object."""

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
    def add_artifact(self, entry: IndexedArtifact, parents: Sequence[str],
                     fields: Mapping[str, str] | None = None) -> bool:
        """Index an artifact, its parent edges and its metadata ``fields`` (field -> index
        text); False if the digest was already indexed."""

    @abc.abstractmethod
    def find_artifacts(self, kind: str | None = None, name: str | None = None,
                       where: Mapping[str, str] | None = None, limit: int | None = None) -> list[IndexedArtifact]:
        """Artifacts by kind, name and indexed field values (all must match), oldest first,
        served by the catalog's indexes."""

    @abc.abstractmethod
    def index_fields(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Add (digest, field, value) rows to the field index; rows already there are kept."""

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
        """Move ``name`` to ``new`` (None deletes) only if it points at ``expected`` now and
        every protection rule matching ``name`` lists ``actor``. A refused move is recorded
        (``refused``) and raises ``RefProtectedError``."""

    @abc.abstractmethod
    def ref_rules(self) -> list[RefRule]:
        """Every protection rule, by pattern."""

    @abc.abstractmethod
    def set_ref_rule(self, pattern: str, actors: Sequence[str] | None, *, actor: str, at: str | None = None) -> None:
        """Protect refs matching ``pattern`` for ``actors`` (None removes the rule). Changing
        or removing an existing rule needs an actor that rule lists."""

    @abc.abstractmethod
    def refs(self, prefix: str = "") -> list[Ref]: ...

    @abc.abstractmethod
    def history(self, name: str, *, refused: bool = False) -> list[RefChange]:
        """Every change of ``name``, oldest first; with ``refused``, refused moves too."""

    @abc.abstractmethod
    def ref_changes(self, since: int = 0, prefix: str = "") -> list[RefChange]:
        """Changes with ``seq > since`` of refs starting with ``prefix``, in order."""

    # -- runs ------------------------------------------------------------------------
    @abc.abstractmethod
    def start_run(self, run: RunRecord, artifact: IndexedArtifact, parents: Sequence[str], *, actor: str,
                  details: Mapping[str, Any], fields: Mapping[str, str] | None = None) -> RunEvent | None:
        """Record a new run in one transaction: its row, its ``run`` artifact (blobs already
        written), the ref ``run/<id>`` and its first event. None (nothing written) if a live
        or succeeded run already holds ``run.key``."""

    @abc.abstractmethod
    def run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    def run_by_key(self, key: str) -> RunRecord | None:
        """The run holding ``key``: not failed or cancelled (at most one)."""

    @abc.abstractmethod
    def runs(self, *, kind: str | None = None, states: Sequence[str] | None = None, since: str | None = None,
             key: str | None = None) -> list[RunRecord]:
        """Runs started at or after ``since``, oldest first."""

    @abc.abstractmethod
    def claim_run(self, run_id: str, expected: RunOwner, owner: RunOwner, *, state: str, actor: str, at: str,
                  details: Mapping[str, Any]) -> RunEvent | None:
        """Take a run over from ``expected`` (its owner, gone) and record the event; None if
        another process took it first."""

    @abc.abstractmethod
    def run_event(self, run_id: str, owner: RunOwner, *, state: str, actor: str, at: str,
                  details: Mapping[str, Any]) -> RunEvent:
        """Append an event and move the run's state; only its owner may, and never after a
        terminal state."""

    @abc.abstractmethod
    def heartbeat_run(self, run_id: str, owner: RunOwner, at: str) -> None: ...

    @abc.abstractmethod
    def run_events(self, run_id: str | None = None, since: int = 0) -> list[RunEvent]:
        """Events with ``seq > since`` (of one run, or of all), in order."""

    @abc.abstractmethod
    def log_run_metrics(self, run_id: str, owner: RunOwner, step: int, metrics: Mapping[str, float], at: str) -> None:
        """Record metric values at ``step``; a value logged again for the same step replaces it."""

    @abc.abstractmethod
    def run_metrics(self, run_id: str) -> list[MetricPoint]: ...

    @abc.abstractmethod
    def add_run_output(self, run_id: str, owner: RunOwner, name: str, digest: str, at: str) -> None:
        """Record an output; the same name again must be the same digest."""

    @abc.abstractmethod
    def run_outputs(self, run_id: str) -> dict[str, str]: ...
