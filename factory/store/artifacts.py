"""Artifact records: the durable, immutable description of everything factory makes.

An artifact has a kind, a ``digest`` (its identity: the hash of its content: the
blob's bytes, a dataset's canonical rows, a model package's manifest, or, for
artifacts that are pure metadata, the canonical JSON of that metadata), typed
metadata, the digests of its parents, when it was made and by which code. The record
itself is canonical JSON stored as a blob (``record_digest``), so records are
tamper-evident and the catalog index can be rebuilt from blobs alone.

Adding an artifact whose digest is already known returns the existing record: the
same content is the same artifact, whoever makes it again. If the new call brings
parents not recorded yet (a second producer of the same bytes), they are kept: a
production record (the same digest and kind, the new parents) is stored beside the
first, and lineage shows the parents of both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from factory._version import code_version
from factory.errors import InvalidInputError, MetaConflictError, NotFoundError
from factory.store._fields import BACKFILL_KEY, indexed_fields, where_values
from factory.store._digest import canonical_json, check_digest, is_digest
from factory.store.blobs import BlobStore
from factory.store.catalog import Catalog, IndexedArtifact
from factory.store.kinds import ArtifactKind, check_kind, check_kind_name

__all__ = ["Artifact", "ArtifactKind", "ArtifactStore", "Digest", "RECORD_TYPE"]

log = logging.getLogger(__name__)

RECORD_TYPE = "factory.artifact/v1"
_BACKFILL_BATCH = 1000
Digest = Annotated[str, AfterValidator(check_digest)]
M = TypeVar("M", bound=BaseModel)


class Artifact(BaseModel):
    """One immutable record. ``metadata`` is JSON; read it typed with ``meta(Model)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["factory.artifact/v1"] = RECORD_TYPE
    kind: Annotated[str, AfterValidator(check_kind_name)]
    digest: Digest
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parents: tuple[Digest, ...] = ()
    created_at: datetime
    producer: str

    def meta(self, model: type[M]) -> M:
        """The metadata parsed as ``model`` (each kind's module defines its own)."""
        return model.model_validate(self.metadata)

    def to_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


def _metadata_dict(metadata: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if isinstance(metadata, BaseModel):
        return metadata.model_dump(mode="json")
    # Round-trip through canonical JSON so what is stored is exactly what is hashed.
    try:
        return json.loads(canonical_json(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"artifact metadata must be JSON-serialisable: {exc}") from exc


class ArtifactStore:
    """Writes artifact records as blobs and indexes them in the catalog."""

    def __init__(self, blobs: BlobStore, catalog: Catalog, *, clock: Callable[[], datetime] | None = None):
        self.blobs = blobs
        self.catalog = catalog
        self._clock = clock or (lambda: datetime.now(UTC))
        self._fields_ready = False

    def add(
        self,
        kind: ArtifactKind | str,
        *,
        digest: str | None = None,
        metadata: BaseModel | Mapping[str, Any] | None = None,
        parents: Iterable[str] = (),
        name: str | None = None,
    ) -> Artifact:
        """Record an artifact; return the existing record if ``digest`` is already known.

        Without ``digest`` the artifact is pure metadata: its content is the canonical
        JSON of (kind, name, metadata, parents), stored as a blob, and its digest is
        that blob's.
        """
        kind, meta, parent_list = self._checked(kind, metadata, parents)
        if digest is None:
            digest = self.blobs.put_bytes(self.content(kind, name=name, metadata=meta, parents=parent_list))
        else:
            check_digest(digest)
        existing = self.catalog.artifact(digest)
        if existing is not None:
            return self._another_production(existing, name, meta, parent_list)
        record, entry = self._written(kind, digest, name, meta, parent_list)
        if not self.catalog.add_artifact(entry, parent_list, indexed_fields(meta)):
            # Another writer indexed the same digest first; theirs is the record.
            return self._another_production(self.catalog.artifact(digest), name, meta, parent_list)
        return record

    def prepare(self, kind: ArtifactKind | str, *, metadata: BaseModel | Mapping[str, Any] | None = None,
                parents: Iterable[str] = (), name: str | None = None) -> tuple[Artifact, IndexedArtifact]:
        """Write a new pure-metadata artifact's blobs without indexing it, for a caller that
        indexes it together with other rows in one catalog transaction (``runs.start``)."""
        kind, meta, parent_list = self._checked(kind, metadata, parents)
        digest = self.blobs.put_bytes(self.content(kind, name=name, metadata=meta, parents=parent_list))
        return self._written(kind, digest, name, meta, parent_list)

    def _checked(self, kind: str, metadata: BaseModel | Mapping[str, Any] | None,
                 parents: Iterable[str]) -> tuple[str, dict[str, Any], list[str]]:
        kind = check_kind(kind)
        parent_list = sorted(set(parents))
        for parent in parent_list:
            check_digest(parent)
            if not self.exists(parent):
                raise NotFoundError(
                    f"parent {parent} of the new {kind} artifact is not in the store: record the parent first"
                )
        return kind, _metadata_dict(metadata), parent_list

    def _written(self, kind: str, digest: str, name: str | None, meta: dict[str, Any],
                 parents: list[str]) -> tuple[Artifact, IndexedArtifact]:
        """A new record for ``digest``, stored as a blob, and its index entry."""
        record = Artifact(kind=kind, digest=digest, name=name, metadata=meta, parents=tuple(parents),
                          created_at=self._clock(), producer=code_version())
        record_digest = self.blobs.put_bytes(record.to_json())
        return record, IndexedArtifact(digest, kind, name, record_digest, record.created_at.isoformat())

    @staticmethod
    def content(kind: str, *, name: str | None, metadata: Mapping[str, Any], parents: Iterable[str]) -> bytes:
        """The bytes a pure-metadata artifact is: its digest is theirs (``add`` without ``digest``)."""
        return canonical_json({"kind": str(kind), "name": name, "metadata": dict(metadata), "parents": sorted(parents)})

    def _another_production(self, existing: IndexedArtifact, name: str | None, meta: dict[str, Any],
                            parents: list[str]) -> Artifact:
        """The known record, or, when ``parents`` adds to its parents, the record of this new production."""
        known = set(self.catalog.parents(existing.digest))
        if set(parents) <= known:
            return self._load(existing)
        record, entry = self._written(existing.kind, existing.digest, name or existing.name, meta, parents)
        if not self.catalog.add_production(entry.digest, entry.record_digest, entry.created_at, parents):
            return self._load(existing)  # a concurrent writer recorded these parents first
        return record

    def exists(self, digest: str) -> bool:
        """Known as an artifact, or at least stored as a blob."""
        return self.catalog.artifact(digest) is not None or self.blobs.exists(digest)

    def get(self, digest: str) -> Artifact:
        check_digest(digest)
        entry = self.catalog.artifact(digest)
        if entry is None:
            raise NotFoundError(
                f"no artifact {digest} in the store: check the digest (see 'factory lineage' or 'factory dataset list')"
            )
        return self._load(entry)

    def _load(self, entry: IndexedArtifact) -> Artifact:
        return self._load_record(entry.record_digest)

    def _load_record(self, record_digest: str) -> Artifact:
        return Artifact.model_validate_json(self.blobs.get(record_digest))

    def productions(self, digest: str) -> list[Artifact]:
        """Every record of ``digest``'s production, oldest (the one ``get`` returns) first."""
        self.get(digest)
        return [self._load_record(r) for r in self.catalog.productions(digest)]

    def find(self, kind: ArtifactKind | str | None = None, name: str | None = None,
             where: Mapping[str, str | int | float | bool | None] | None = None,
             limit: int | None = None) -> list[Artifact]:
        """Artifacts of ``kind``, ``name`` and top-level metadata fields equal to ``where``'s
        values (all must match), oldest first, at most ``limit``.

        Served by the catalog's indexes: only the matching records are read.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidInputError(f"limit {limit!r} is not a count: give an int >= 1")
        values = where_values(where) if where else None
        if values:
            self._backfill_fields()
        entries = self.catalog.find_artifacts(str(kind) if kind is not None else None, name, values, limit)
        return [self._load(e) for e in entries]

    def _backfill_fields(self) -> None:
        """Index the fields of artifacts recorded before the field index existed (once per catalog)."""
        if self._fields_ready:
            return
        if self.catalog.meta(BACKFILL_KEY) is not None:
            entries = self.catalog.artifacts()
            for start in range(0, len(entries), _BACKFILL_BATCH):
                rows = [(e.digest, f, v) for e in entries[start:start + _BACKFILL_BATCH]
                        for f, v in indexed_fields(self._load(e).metadata).items()]
                self.catalog.index_fields(rows)
            try:
                self.catalog.set_meta(BACKFILL_KEY, None, expected="pending")
            except MetaConflictError:
                pass  # another process finished the same backfill first
            log.info("indexed the metadata fields of %d existing artifacts", len(entries))
        self._fields_ready = True

    def resolve(self, text: str) -> str:
        """A full digest from a digest or a unique prefix of one (``sha256:ab12``)."""
        if is_digest(text):
            return text
        prefix = text if text.startswith("sha256:") else "sha256:" + text
        if len(prefix) < len("sha256:") + 6:
            raise InvalidInputError(f"{text!r} is too short to name an artifact: give at least 6 hex characters")
        matches = self.catalog.digests_with_prefix(prefix)
        if not matches:
            raise NotFoundError(f"no artifact matches {text!r}: check the digest")
        if len(matches) > 1:
            raise InvalidInputError(f"{text!r} matches several artifacts: give more characters of the digest")
        return matches[0]
