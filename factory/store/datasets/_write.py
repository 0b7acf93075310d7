"""Writing a version's rows into its name's Lance dataset, sharing storage with the versions before it.

The rows go in one of three ways, tried in this order:

- the first version of a name creates the Lance dataset;
- when the latest Lance version is a recorded version with the same schema, the new rows
  are diffed against it in streamed batches (``_delta``): nothing removed, only the new
  rows are appended (one Lance commit); some removed, and added plus removed rows at most
  half the new version, the removed rows are deleted by row address and the new ones
  appended (two commits; the one in between is never referenced);
- otherwise a full overwrite (a new Lance version holding exactly these rows).

Writers of one name on one machine take turns through a file lock next to the Lance
dataset, so concurrent first adds do not race to create it and each add diffs against
the head it will commit on. Remote homes rely on Lance's own atomic commits instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import lance
import pyarrow as pa
import pyarrow.fs as pafs

from factory.errors import InvalidInputError, RefConflictError
from factory.store._canonical import normalize_table
from factory.store.datasets._delta import stream_diff

__all__ = ["LanceConflict", "check_columns", "writer_lock", "write_rows"]

logger = logging.getLogger(__name__)


class LanceConflict(RefConflictError):
    """Another writer created the name's Lance dataset first; the add is retried on what it wrote."""


# Lance's own columns, which a stored table may not name; and what Lance cannot hold in a name.
_RESERVED = {"_rowid", "_rowaddr", "_rowoffset", "_row_created_at_version", "_row_last_updated_at_version"}
_FORBIDDEN = (".", "`", "\x00")


def check_columns(table: pa.Table) -> None:
    """Refuse column names that Lance cannot store or read back, before anything is written."""
    for name in table.column_names:
        if name in _RESERVED or any(c in name for c in _FORBIDDEN):
            raise InvalidInputError(
                f"column {name!r} cannot be stored in a dataset: names may not contain '.', '`' or NUL, nor be one "
                f"of Lance's own columns ({', '.join(sorted(_RESERVED))}); rename the column"
            )


@contextmanager
def writer_lock(folder: str, name: str, *, remote: bool) -> Iterator[None]:
    """Let one writer at a time write dataset ``name`` from this machine (a no-op for a remote home)."""
    if remote:
        yield
        return
    import fcntl

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f".{name}.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _exists(uri: str) -> bool:
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _schema_set(table: pa.Table) -> set[tuple[str, str]]:
    return {(f.name, str(f.type)) for f in table.schema}


def write_rows(uri: str, table: pa.Table, key: Sequence[str], recorded: Mapping[int, object], *,
               storage_options: Mapping[str, str] | None = None, exists=None) -> int:
    """Write ``table`` (normalized, canonical order) as a new Lance version at ``uri``; return its number.

    ``recorded``: the Lance versions that recorded dataset versions point at; only such a
    head is diffed against (one left by a crashed writer might hold anything).
    """
    if not (exists or _exists)(uri):
        try:
            return lance.write_dataset(table, uri, mode="create", storage_options=storage_options).version
        except OSError as exc:
            if "already exists" not in str(exc):
                raise
            raise LanceConflict(f"the Lance dataset at {uri} was created by another writer meanwhile") from None
    head = lance.dataset(uri, storage_options=storage_options)
    if head.version in recorded:
        written = _write_delta(uri, head, table, key, storage_options)
        if written is not None:
            return written
    return lance.write_dataset(table, uri, mode="overwrite", storage_options=storage_options).version


def _write_delta(uri: str, head: lance.LanceDataset, table: pa.Table, key: Sequence[str],
                 storage_options: Mapping[str, str] | None) -> int | None:
    """Append/delete against ``head``; None where a full write is better (or the head moved meanwhile)."""
    if _schema_set(normalize_table(head.schema.empty_table())) != _schema_set(table):
        return None
    table = table.select(head.schema.names)
    limit = table.num_rows // 2
    delta = stream_diff(head, table, key, max_removed=limit)
    if delta is None or (len(delta.removed) and len(delta.added) + len(delta.removed) > limit):
        return None
    base, commits = head.version, 0  # delete() moves ``head`` on to the version it commits
    if len(delta.removed):
        head.delete(f"_rowaddr IN ({','.join(map(str, delta.removed.tolist()))})")
        commits += 1
    if len(delta.added):
        lance.write_dataset(table.take(pa.array(delta.added)), uri, mode="append", storage_options=storage_options)
        commits += 1
    result = lance.dataset(uri, storage_options=storage_options)
    if result.version != base + commits or result.count_rows() != table.num_rows:
        logger.warning("dataset at %s moved while writing; rewriting it in full", uri)
        return None
    return result.version
