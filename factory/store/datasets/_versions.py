"""Dataset versions: tables stored in Lance, named by the digest of their canonical content.

Each name has one Lance dataset at ``<home>/datasets/<name>.lance`` and a ref
``dataset/<name>``; every distinct content the ref has pointed at is a version, and
version N is the N-th distinct digest in the ref's history. A version is a ``dataset``
artifact whose digest is ``canonical_digest`` of its rows (see ``_canonical``) and whose
metadata (``DatasetMeta``) says which Lance version holds exactly those rows.

Storage is shared between versions of a name. The new rows are diffed (as multisets,
exactly, not by hash) against the rows of the Lance dataset's latest version:

- nothing removed: only the new rows are appended (one Lance commit);
- some removed, and added plus removed rows are at most half the new version: the
  removed rows are deleted by row address and the new ones appended (two commits; the
  one in between is never referenced);
- otherwise, or when the latest Lance version is not a known version (a crash between
  the write and the record), or the schema changed: a full overwrite.

Old Lance versions are never cleaned up, so every version reads back exactly. Adding
content that the ref already points at writes nothing. Content already stored as a
dataset artifact (under this name or another) is not written again: the ref moves to the
existing artifact, whose record (name, parents, location) stays that of its first add.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lance
import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

from factory.errors import InvalidInputError, NotFoundError, SchemaChangeError
from factory.store._canonical import (
    canonical_order,
    canonical_type,
    check_key,
    multiset_diff,
    normalize_table,
    sorted_digest,
)
from factory.store._digest import canonical_json, is_digest
from factory.store.artifacts import Artifact, ArtifactKind

if TYPE_CHECKING:
    import ray.data

    from factory.store._parts import StoreParts

__all__ = ["DatasetMeta", "DatasetStore", "DatasetVersion", "read_table_file", "check_dataset_name"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{6,64}$")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
_PARQUET = (".parquet", ".pq")
_IPC = (".arrow", ".feather", ".ipc")


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


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"{name!r} is not a valid dataset name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def read_table_file(path: str | os.PathLike[str]) -> pa.Table:
    """Read a CSV, Parquet or Arrow IPC (``.arrow``/``.feather``/``.ipc``) file, by extension."""
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith(_CSV):
        fmt = "CSV"
    elif lower.endswith(_PARQUET):
        fmt = "Parquet"
    elif lower.endswith(_IPC):
        fmt = "Arrow IPC"
    else:
        raise InvalidInputError(
            f"cannot tell the format of {path}: name it *.csv, *.parquet or *.arrow/*.feather/*.ipc"
        )
    if not path.is_file():
        raise InvalidInputError(f"no file at {path}: check the path")
    try:
        if fmt == "CSV":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
            binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
            if binary:
                raise InvalidInputError(
                    f"{path} is not valid UTF-8 text in column(s) {', '.join(binary)}: re-save it as UTF-8 CSV"
                )
            return table
        if fmt == "Parquet":
            return _read_parquet(path)
        if lower.endswith(".feather"):
            import pyarrow.feather as feather

            return feather.read_table(path)
        with pa.memory_map(str(path)) as source:
            try:
                return pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"cannot read {path} as {fmt}: {exc}; check that it is a valid {fmt} file") from exc


def _read_parquet(path: Path) -> pa.Table:
    """A Parquet file with the Arrow types its writer recorded, where Parquet could not hold them.

    Parquet has no second-resolution timestamps or times and no date64, so pyarrow writes
    ``timestamp[s]`` as ``timestamp[ms]``; casting back (only where exact) gives the same
    types, hence the same digest, as the table that was written.
    """
    import base64

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    recorded = (pq.ParquetFile(path).metadata.metadata or {}).get(b"ARROW:schema")
    if recorded is None:
        return table
    try:
        original = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(recorded)))
    except (pa.ArrowException, ValueError):
        return table
    for i, field in enumerate(table.schema):
        index = original.get_field_index(field.name)
        if index < 0:
            continue
        want = original.field(index).type
        try:
            if canonical_type(want, field.name) != canonical_type(field.type, field.name):
                table = table.set_column(i, field.name, table.column(i).cast(want, safe=True))
        except (pa.ArrowException, InvalidInputError):
            continue
    return table


def _as_table(source: Any) -> tuple[pa.Table, str | None]:
    """A table and, for a file, its name, from a path, an Arrow table or any Arrow stream (pandas too)."""
    if isinstance(source, (str, os.PathLike)):
        return read_table_file(source), os.path.basename(os.fspath(source))
    if isinstance(source, pa.Table):
        return source, None
    if type(source).__module__.split(".")[0] == "pandas":
        return pa.Table.from_pandas(source, preserve_index=False), None
    if isinstance(source, pa.RecordBatch) or hasattr(source, "__arrow_c_stream__"):
        return pa.table(source), None
    raise InvalidInputError(f"cannot add a {type(source).__name__}: give a file path or a pyarrow.Table")


def _exists(uri: str) -> bool:
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


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
        if _NAME.match(ref):
            latest = self.store.refs.get(f"dataset/{ref}")
            if latest is not None:
                return self._named(ref, latest)
        if is_digest(ref) or ref.startswith("sha256:") or _HEX.match(ref):
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

    def lance(self, ref: str | DatasetVersion) -> lance.LanceDataset:
        """The Lance dataset checked out at the version holding exactly this version's rows."""
        v = ref if isinstance(ref, DatasetVersion) else self.get(ref)
        return lance.dataset(v.uri, version=v.lance_version)

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

        v = ref if isinstance(ref, DatasetVersion) else self.get(ref)
        return ray.data.read_lance(
            v.uri, version=v.lance_version, columns=list(columns) if columns else None, filter=filter,
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
        or any Arrow stream. ``key``: the columns that order rows canonically; left
        empty, the previous version's key is kept when all its columns are still there.
        Everything is checked before anything is written, so bad input leaves the store
        untouched. A lost race on the ref raises ``RefConflictError``; retry the add.
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
        table, label = _as_table(source)
        table = normalize_table(table)
        ref = f"dataset/{name}"
        previous = self.store.refs.get(ref)
        before = self._named(name, previous) if previous else None
        if key:
            key = check_key(table, key)
        elif before is not None and all(k in table.column_names for k in before.key):
            key = before.key
        else:
            key = ()
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
            lance_version = self._write(name, table, key)
            meta = DatasetMeta(
                location=self._location(name),
                lance_version=lance_version,
                num_rows=table.num_rows,
                key=key,
                columns=schema,
                source=label,
                extra=extra,
            )
            artifact = self.store.artifacts.add(
                ArtifactKind.DATASET, digest=digest, name=name, metadata=meta, parents=parent_digests
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

    def _head(self, name: str, uri: str) -> int | None:
        """The Lance dataset's latest version, if a recorded dataset version is exactly it."""
        latest = lance.dataset(uri).version
        location = self._location(name)
        for artifact in self.store.artifacts.find(kind=ArtifactKind.DATASET, name=name):
            meta = artifact.meta(DatasetMeta)
            if meta.location == location and meta.lance_version == latest:
                return latest
        return None

    def _write(self, name: str, table: pa.Table, key: tuple[str, ...]) -> int:
        """Write ``table`` into the name's Lance dataset, sharing what it can; the Lance version."""
        uri = self.store.uri(self._location(name))
        if not _exists(uri):
            return lance.write_dataset(table, uri, mode="create").version
        head = self._head(name, uri)
        if head is not None:
            shared = self._write_delta(uri, head, table, key)
            if shared is not None:
                return shared
        return lance.write_dataset(table, uri, mode="overwrite").version

    def _write_delta(self, uri: str, head: int, table: pa.Table, key: tuple[str, ...]) -> int | None:
        """Append/delete against Lance version ``head``; None where a full write is better."""
        current = lance.dataset(uri, version=head)
        stored = current.to_table(with_row_address=True)
        addresses = stored.column("_rowaddr")
        stored = normalize_table(stored.drop_columns(["_rowaddr"]))
        if set(_schema_of(stored)) != set(_schema_of(table)):
            return None
        table = table.select(stored.column_names)
        added, removed = multiset_diff(stored, table, key)
        if len(removed) and len(added) + len(removed) > table.num_rows // 2:
            return None
        commits = 0
        if len(removed):
            doomed = addresses.take(pa.array(removed)).to_numpy()
            current.delete(f"_rowaddr IN ({','.join(map(str, doomed.tolist()))})")
            commits += 1
        if len(added):
            current = lance.write_dataset(table.take(pa.array(added)), uri, mode="append")
            commits += 1
        result = lance.dataset(uri)
        if result.version != head + commits or result.count_rows() != table.num_rows:
            logger.warning("dataset at %s moved while writing; rewriting it in full", uri)
            return None
        return result.version
