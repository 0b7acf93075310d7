"""Artifact records: the durable, immutable description of everything factory makes.

An artifact has a kind, a ``digest`` (its identity: the hash of its content: the
blob's bytes, a dataset's canonical rows, a model package's manifest, or, for
artifacts that are pure metadata, the canonical JSON of that metadata), typed
metadata, the digests of its parents, when it was made and by which code. The record
itself is canonical JSON stored as a blob (``record_digest``), so records are
tamper-evident and the catalog index can be rebuilt from blobs alone.

Adding an artifact whose digest is already known returns the existing record: the
same content is the same artifact, whoever makes it again.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from factory._version import code_version
from factory.errors import InvalidInputError, NotFoundError
from factory.store._digest import canonical_json, check_digest, is_digest
from factory.store.blobs import BlobStore
from factory.store.catalog import Catalog, IndexedArtifact

__all__ = ["Artifact", "ArtifactKind", "ArtifactStore", "Digest", "RECORD_TYPE"]

RECORD_TYPE = "factory.artifact/v1"
Digest = Annotated[str, AfterValidator(check_digest)]
M = TypeVar("M", bound=BaseModel)


class ArtifactKind(enum.StrEnum):
    BLOB = "blob"
    TREE = "tree"
    DATASET = "dataset"
    FEATURE_VIEW = "feature-view"
    EMBEDDING_COLLECTION = "embedding-collection"
    TRAINING_CONFIG = "training-config"
    CODE = "code"
    ENVIRONMENT = "environment"
    MODEL = "model"
    EVALUATION = "evaluation"
    ATTESTATION = "attestation"
    TICKET = "ticket"
    DEPLOYMENT = "deployment"


class Artifact(BaseModel):
    """One immutable record. ``metadata`` is JSON; read it typed with ``meta(Model)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["factory.artifact/v1"] = RECORD_TYPE
    kind: ArtifactKind
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
        kind = ArtifactKind(kind)
        meta = _metadata_dict(metadata)
        parent_list = sorted(set(parents))
        for parent in parent_list:
            check_digest(parent)
            if not self.exists(parent):
                raise NotFoundError(
                    f"parent {parent} of the new {kind} artifact is not in the store: record the parent first"
                )
        if digest is None:
            content = {"kind": str(kind), "name": name, "metadata": meta, "parents": parent_list}
            digest = self.blobs.put_bytes(canonical_json(content))
        else:
            check_digest(digest)
        existing = self.catalog.artifact(digest)
        if existing is not None:
            return self._load(existing)
        record = Artifact(
            kind=kind,
            digest=digest,
            name=name,
            metadata=meta,
            parents=tuple(parent_list),
            created_at=self._clock(),
            producer=code_version(),
        )
        record_digest = self.blobs.put_bytes(record.to_json())
        entry = IndexedArtifact(digest, str(kind), name, record_digest, record.created_at.isoformat())
        if not self.catalog.add_artifact(entry, parent_list):
            # Another writer indexed the same digest first; theirs is the record.
            return self.get(digest)
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
        return Artifact.model_validate_json(self.blobs.get(entry.record_digest))

    def find(self, kind: ArtifactKind | str | None = None, name: str | None = None) -> list[Artifact]:
        """Every artifact of ``kind`` (and ``name``), oldest first."""
        entries = self.catalog.artifacts(str(ArtifactKind(kind)) if kind is not None else None, name)
        return [self._load(e) for e in entries]

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
