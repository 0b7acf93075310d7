"""The files behind a dataset version, and their SHA-256: what makes a version's rows tamper-evident.

A version's digest names its canonical content, but Lance reads the rows from files on
disk (the version's manifest, its data files, deletion files and indexes), which anyone
with write access could change. When a version is written, every file that its Lance
version references is hashed and the hashes are recorded in the version's artifact record
(itself a content-addressed blob). Reading a version re-hashes its files first; a file
that is missing or hashes differently is an error naming it, never rows handed out.

Lance never rewrites a file it has written (new data, deletions and manifests get new
names), so a path recorded for one version has the same bytes in every later version: a
new version reuses the hashes of the files it shares and hashes only its new ones.

A file hashed once in a process is not hashed again while its size, modification time,
inode and change time stay as they were (the change time cannot be set back by a writer).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from factory.store._digest import PREFIX
from factory.store._hashing import CHUNK

__all__ = ["FileProblem", "version_files", "hash_files", "check_files"]

_THREADS = max(1, min(4, os.cpu_count() or 1))
_seen_lock = threading.Lock()
_seen: dict[tuple[str, str], tuple[int, ...]] = {}  # (path, digest) -> stat signature when it last matched


@dataclass(frozen=True)
class FileProblem:
    """A file of a dataset version that is missing, unreadable or no longer hashes to its record."""

    path: str
    location: str
    problem: str  # "missing", "unreadable" or "corrupt"
    detail: str


def _filesystem(uri: str, settings=None):
    import pyarrow.fs as pafs

    if settings is not None:
        import factory.store._fs as _fs

        return _fs.filesystem(uri, settings)
    if "://" in uri:
        fs, root = pafs.FileSystem.from_uri(uri)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def version_files(uri: str, lance_version: int, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """Every file (path inside the Lance dataset) that Lance version ``lance_version`` reads or records."""
    import lance
    import pyarrow.compute as pc

    files = lance.dataset(uri, version=lance_version, storage_options=storage_options).tracked_files(min_version=lance_version).read_all()
    mine = files.filter(pc.equal(files.column("version"), lance_version))
    return sorted(set(mine.column("path").to_pylist()))


def _sha256(fs, location: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(location) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return PREFIX + h.hexdigest()


def hash_files(uri: str, paths: Iterable[str], known: Mapping[str, str] | None = None, *,
                settings=None) -> dict[str, str]:
    """The SHA-256 of each file, reusing ``known`` hashes (of files an earlier version recorded).

    ``settings`` reach a remote home (endpoint, credentials); left out, a local path is assumed.
    """
    known = known or {}
    fs, root = _filesystem(uri, settings)
    paths = sorted(set(paths))
    todo = [p for p in paths if p not in known]
    with ThreadPoolExecutor(_THREADS) as pool:
        fresh = dict(zip(todo, pool.map(lambda p: _sha256(fs, f"{root}/{p}"), todo), strict=True))
    return {p: known.get(p) or fresh[p] for p in paths}


def _signature(fs, location: str) -> tuple[int, ...] | None:
    """What changes when a file is rewritten: (size, mtime, inode, ctime) locally, (size, mtime) elsewhere."""
    if type(fs).__name__ == "LocalFileSystem":
        try:
            st = os.stat(location)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    info = fs.get_file_info(location)
    mtime = info.mtime_ns if info.mtime_ns is not None else -1
    return None if info.size is None else (info.size, mtime)


def _check_one(fs, root: str, path: str, digest: str, *, remember: bool) -> FileProblem | None:
    import pyarrow.fs as pafs

    location = f"{root}/{path}"
    try:
        info = fs.get_file_info(location)
        if info.type == pafs.FileType.NotFound:
            return FileProblem(path, location, "missing", "the file is gone")
        if info.type != pafs.FileType.File:
            return FileProblem(path, location, "unreadable", "something other than a file stands at its path")
        before = _signature(fs, location)
        if remember and before is not None and _seen.get((location, digest)) == before:
            return None
        actual = _sha256(fs, location)
    except OSError as exc:
        return FileProblem(path, location, "unreadable", f"cannot read it ({exc})")
    if actual != digest:
        return FileProblem(path, location, "corrupt", f"its content hashes to {actual}, not {digest}")
    if remember and before is not None and _signature(fs, location) == before:
        with _seen_lock:
            _seen[(location, digest)] = before
    return None


def check_files(uri: str, files: Mapping[str, str], *, remember: bool = True,
                settings=None) -> list[FileProblem]:
    """Re-hash a version's files against their recorded hashes; the problems found, by path.

    With ``remember``, a file that matched before in this process and has not been
    touched since is not read again (``verify`` passes False to read everything).
    """
    fs, root = _filesystem(uri, settings)
    items = sorted(files.items())
    with ThreadPoolExecutor(_THREADS) as pool:
        found = pool.map(lambda item: _check_one(fs, root, item[0], item[1], remember=remember), items)
        return [p for p in found if p is not None]
