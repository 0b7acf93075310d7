"""Dataset versions: tables stored in Lance, named by the digest of their canonical content.

Each name has one Lance dataset at ``<home>/datasets/<name>.lance`` and a ref
``dataset/<name>``; every distinct content the ref has pointed at is a version, and
version N is the N-th distinct digest in the ref's history. A version is a ``dataset``
artifact whose digest is ``canonical_digest`` of its rows (see ``_canonical``) and whose
metadata (``DatasetMeta``) says which Lance version holds exactly those rows, and the
SHA-256 of every file that Lance version reads (``_files``): reading a version checks
them first, so rows changed on disk are an error naming the file, never handed out.

Storage is shared between versions of a name: the new rows are diffed, exactly, against
the latest Lance version in streamed batches, and only what changed is written (see
``_write``). Old Lance versions are never cleaned up, so every version reads back
exactly. Adding content that the ref already points at writes nothing. Content already
stored as a dataset artifact (under this name or another) is not written again: the ref
moves to the existing artifact, whose record (name, parents, location) stays that of its
first add. Adds of one name take turns, and one that finds the ref moved under it (a
concurrent writer elsewhere) starts over on the new head.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import lance
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError, RefConflictError, SchemaChangeError
from factory.store._canonical import canonical_order, check_key, normalize_table, sorted_digest
from factory.store._digest import canonical_json, is_digest
from factory.store.artifacts import Artifact, ArtifactKind
from factory.store.datasets._files import check_files, hash_files, version_files
from factory.store.datasets._tables import as_table, read_table_file
from factory.store.datasets._write import check_columns, writer_lock, write_rows

if TYPE_CHECKING:
    import ray.data

    from factory.store._parts import StoreParts

__all__ = ["DatasetMeta", "DatasetStore", "DatasetVersion", "read_table_file", "check_dataset_name"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{6,64}$")
_ATTEMPTS = 5


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a named dataset, and where in Lance its rows are."""

    digest: str
    name: str
    version: int
    uri: str
    lance_version: int
    num_rows: int
    key: tuple[str, ...]
    schema: tuple[tuple[str, str], ...]
    created_at: datetime
    files: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """``name@version``, the short way to name this version on the command line."""
        return f"{self.name}@{self.version}"


class DatasetMeta(BaseModel):
    """The metadata of a ``dataset`` artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    location: str = Field(description="the Lance dataset, relative to the store home")
    lance_version: int = Field(ge=0)
    num_rows: int = Field(ge=0)
    key: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...]
    source: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] | None = Field(
        None, description="the SHA-256 of each file the Lance version reads, by path inside the Lance dataset; "
        "None for versions written before files were recorded")


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{name!r} is not a valid dataset name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _schema_of(table: pa.Table) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, str(f.type)) for f in table.schema)


def _schema_change(old: Sequence[Sequence[str]], new: Sequence[Sequence[str]]) -> list[str]:
    before, after = dict(map(tuple, old)), dict(map(tuple, new))
    changes = [f"{c} added ({after[c]})" for c in after if c not in before]
    changes += [f"{c} removed (was {before[c]})" for c in before if c not in after]
    changes += [f"{c} {before[c]} -> {after[c]}" for c in after if c in before and before[c] != after[c]]
    return changes


class DatasetStore:
    """Add, find and read dataset versions of one store."""

    def __init__(self, store: StoreParts):
        self.store = store

    # -- naming -----------------------------------------------------------------

    def _location(self, name: str) -> str:
        return f"datasets/{name}.lance"

    def names(self) -> list[str]:
        """Every dataset name that has a version, sorted."""
        return [r.name.removeprefix("dataset/") for r in self.store.refs.list("dataset/")]

    def _digests(self, name: str) -> list[str]:
        """The distinct digests the name's ref has pointed at, first appearance first."""
        check_dataset_name(name)
        seen: dict[str, None] = {}
        for change in self.store.refs.history(f"dataset/{name}"):
            if change.new is not None:
                seen.setdefault(change.new)
        return list(seen)

    def _version(self, artifact: Artifact, name: str, number: int) -> DatasetVersion:
        meta = artifact.meta(DatasetMeta)
        return DatasetVersion(
            digest=artifact.digest,
            name=name,
            version=number,
            uri=self.store.uri(meta.location),
            lance_version=meta.lance_version,
            num_rows=meta.num_rows,
            key=tuple(meta.key),
            schema=tuple(tuple(c) for c in meta.columns),
            created_at=artifact.created_at,
            files=meta.files,
        )

    def _dataset_artifact(self, digest: str) -> Artifact:
        artifact = self.store.artifacts.get(digest)
        if artifact.kind != ArtifactKind.DATASET:
            raise NotFoundError(f"{digest} is a {artifact.kind} artifact, not a dataset: give a dataset digest")
        return artifact

    def versions(self, name: str) -> list[DatasetVersion]:
        """Every version of ``name``, oldest first."""
        digests = self._digests(name)
        if not digests:
            raise NotFoundError(f"no dataset named {name!r}: list them with 'factory dataset list'")
        return [self._version(self._dataset_artifact(d), name, i + 1) for i, d in enumerate(digests)]

    def get(self, ref: str) -> DatasetVersion:
        """A version by digest, digest prefix, ``name`` (its latest) or ``name@N``."""
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidInputError("give a dataset as NAME, NAME@VERSION or a digest")
        if "@" in ref:
            name, _, which = ref.rpartition("@")
            versions = self.versions(name)
            if which.isdigit():
                number = int(which)
                if 1 <= number <= len(versions):
                    return versions[number - 1]
                raise NotFoundError(f"dataset {name!r} has versions 1 to {len(versions)}, not {which}")
            digest = self.store.artifacts.resolve(which)
            for v in versions:
                if v.digest == digest:
                    return v
            raise NotFoundError(f"{which} is not a version of dataset {name!r}: see 'factory dataset show {name}'")
        if _NAME.fullmatch(ref):
            latest = self.store.refs.get(f"dataset/{ref}")
            if latest is not None:
                return self._named(ref, latest)
        if is_digest(ref) or ref.startswith("sha256:") or _HEX.fullmatch(ref):
            artifact = self._dataset_artifact(self.store.artifacts.resolve(ref))
            name = artifact.name or ""
            digests = self._digests(name) if name else []
            number = digests.index(artifact.digest) + 1 if artifact.digest in digests else 0
            return self._version(artifact, name, number)
        raise NotFoundError(f"no dataset named {ref!r}: list them with 'factory dataset list'")

    def _named(self, name: str, digest: str) -> DatasetVersion:
        digests = self._digests(name)
        return self._version(self._dataset_artifact(digest), name, digests.index(digest) + 1)

    # -- reading ----------------------------------------------------------------

    def checked(self, ref: str | DatasetVersion) -> DatasetVersion:
        """The version, once every file it reads hashes as recorded; ``CorruptBlobError`` naming the file if not.

        A version written before files were recorded cannot be checked this way (``factory
        store verify --deep`` checks its content instead).
        """
        v = ref if isinstance(ref, DatasetVersion) else self.get(ref)
        if v.files is None:
            logger.debug("dataset %s has no recorded file hashes; its files are not checked", v.ref)
            return v
        problems = check_files(v.uri, v.files, settings=self.store.settings)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else ""
            raise CorruptBlobError(
                f"dataset {v.ref} ({v.digest}) cannot be read: {first.location} is {first.problem}: {first.detail}"
                f"{more}. Restore the file from a replica or add the data again; run 'factory store verify' "
                "to find others",
                v.digest,
                first.location,
            )
        return v

    def lance(self, ref: str | DatasetVersion) -> lance.LanceDataset:
        """The Lance dataset checked out at the version holding exactly this version's rows (files checked)."""
        v = self.checked(ref)
        return lance.dataset(v.uri, version=v.lance_version, storage_options=self.store.storage_options)

    def read(
        self, ref: str | DatasetVersion, columns: Sequence[str] | None = None, filter: str | None = None
    ) -> pa.Table:
        """The version's rows (all, or ``columns`` / the rows matching a SQL ``filter``)."""
        v = ref if isinstance(ref, DatasetVersion) else self.get(ref)
        names = [c for c, _ in v.schema]
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise InvalidInputError(
                    f"dataset {v.ref} has no column(s) {', '.join(missing)}: choose among {', '.join(names)}"
                )
            names = list(columns)
        try:
            table = self.lance(v).to_table(columns=names, filter=filter)
        except ValueError as exc:
            raise InvalidInputError(f"cannot read {v.ref} with filter {filter!r}: {exc}") from exc
        return normalize_table(table) if table.num_columns else table

    def to_ray(
        self, ref: str | DatasetVersion, columns: Sequence[str] | None = None, filter: str | None = None,
        *, blocks: int | None = None,
    ) -> ray.data.Dataset:
        """The version as a Ray Dataset, read in parallel from its Lance version (in ``blocks`` blocks if given)."""
        import ray.data

        v = self.checked(ref)
        return ray.data.read_lance(
            v.uri, version=v.lance_version, columns=list(columns) if columns else None, filter=filter,
            storage_options=self.store.storage_options,
            override_num_blocks=blocks,
        )

    # -- writing ----------------------------------------------------------------

    def add(
        self,
        source: str | os.PathLike[str] | pa.Table | Any,
        *,
        name: str,
        key: Sequence[str] = (),
        parents: Sequence[str] = (),
        allow_schema_change: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> DatasetVersion:
        """Store ``source`` as the new version of ``name``; a no-op if the content is unchanged.

        ``source``: a CSV, Parquet or Arrow IPC file, a pyarrow Table, a pandas DataFrame
        or any Arrow stream. ``key``: the columns that order rows canonically; it need not
        be unique (rows with equal keys are ordered by the other columns). Left empty, the
        previous version's key is kept when all its columns are still there. Everything
        is checked before anything is written, so bad input leaves the store untouched.
        Concurrent adds of one name each land as a version, one after the other.
        """
        check_dataset_name(name)
        parent_digests = [self.store.artifacts.resolve(p) for p in parents]
        for parent in parent_digests:
            if not self.store.artifacts.exists(parent):
                raise NotFoundError(f"parent {parent} is not in the store: add it first")
        try:
            extra = json.loads(canonical_json(dict(metadata or {})))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"dataset metadata must be JSON-serialisable: {exc}") from exc
        table, label = as_table(source)
        table = normalize_table(table)
        check_columns(table)
        key = check_key(table, key) if key else ()
        with writer_lock(self.store.uri("datasets"), name, remote=self.store.remote):
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    return self._add(name, table, key, label, parent_digests, extra, allow_schema_change)
                except RefConflictError as exc:
                    if attempt == _ATTEMPTS:
                        raise
                    logger.info("dataset %s moved while adding (%s); starting over on the new head", name, exc)
        raise AssertionError("unreachable")

    def _add(self, name: str, table: pa.Table, key: tuple[str, ...], label: str | None, parents: list[str],
             extra: dict[str, Any], allow_schema_change: bool) -> DatasetVersion:
        ref = f"dataset/{name}"
        previous = self.store.refs.get(ref)
        before = self._named(name, previous) if previous else None
        if not key and before is not None and all(k in table.column_names for k in before.key):
            key = before.key
        schema = _schema_of(table)
        if before is not None and not allow_schema_change:
            changes = _schema_change(before.schema, schema)
            if changes:
                raise SchemaChangeError(
                    f"dataset {name!r} changes schema ({'; '.join(changes)}): pass --allow-schema-change "
                    "(allow_schema_change=True) to make this its new schema"
                )
        table = table.take(canonical_order(table, key))
        digest = sorted_digest(table, key)
        if digest == previous:
            logger.info("dataset %s unchanged at %s", name, digest)
            return before
        try:
            artifact = self._dataset_artifact(digest)
        except NotFoundError:
            lance_version, files = self._write(name, table, key)
            meta = DatasetMeta(
                location=self._location(name),
                lance_version=lance_version,
                num_rows=table.num_rows,
                key=key,
                columns=schema,
                source=label,
                extra=extra,
                files=files,
            )
            artifact = self.store.artifacts.add(
                ArtifactKind.DATASET, digest=digest, name=name, metadata=meta, parents=parents
            )
        self.store.refs.set(ref, digest, expected=previous, reason=f"dataset add {label or 'table'}")
        logger.info("dataset %s -> %s", name, digest)
        return self._named(name, digest)

    def add_ray(
        self,
        dataset: ray.data.Dataset,
        *,
        name: str,
        key: Sequence[str] = (),
        parents: Sequence[str] = (),
        allow_schema_change: bool = False,
        metadata: Mapping[str, Any] | None = None,
        schema: pa.Schema | None = None,
    ) -> DatasetVersion:
        """``add`` for a Ray Dataset: sorted on the cluster and streamed, never collected in the driver.

        The digest equals what ``add`` gives for the same rows and key; see ``_streamed``.
        ``schema``: the rows' schema when known, which spares running the dataset to learn it.
        """
        from factory.store.datasets._streamed import add_ray

        return add_ray(self, dataset, name=name, key=key, parents=parents, allow_schema_change=allow_schema_change,
                       metadata=metadata, schema=schema)

    def _write(self, name: str, table: pa.Table, key: tuple[str, ...]) -> tuple[int, dict[str, str]]:
        """Write the rows into the name's Lance dataset; the Lance version and the hash of each file it reads."""
        uri = self.store.uri(self._location(name))
        location = self._location(name)
        recorded: dict[int, dict[str, str]] = {}
        for artifact in self.store.artifacts.find(kind=ArtifactKind.DATASET, name=name):
            meta = artifact.meta(DatasetMeta)
            if meta.location == location:
                recorded[meta.lance_version] = meta.files or {}
        options = self.store.storage_options
        lance_version = write_rows(uri, table, key, recorded, storage_options=options, exists=self.store.exists)
        # Lance never rewrites a file, so hashes recorded for earlier versions hold for the files they share.
        known = {path: digest for files in recorded.values() for path, digest in files.items()}
        files = version_files(uri, lance_version, options)
        return lance_version, hash_files(uri, files, known, settings=self.store.settings)
