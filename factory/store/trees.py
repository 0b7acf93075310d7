"""Trees: a folder of files of any size (a checkpoint, a sharded model) as one artifact.

A tree's manifest maps each file's relative path (``/``-separated) to its blob digest,
its size and whether it is executable::

    {"format": "factory.tree/v1",
     "files": {"model-00001-of-00002.safetensors": {"digest": "sha256:...", "executable": false, "size": 536870912}}}

The tree's digest is the SHA-256 of the manifest's canonical JSON; the manifest is
stored as a blob under that digest and recorded as a ``tree`` artifact. Folders are
implied by the paths of their files (an empty folder is not kept, as in git).

``put`` looks at the whole folder before it writes anything, and refuses (with
``InvalidInputError``, nothing written) a link that points outside the folder or to a
folder, a FIFO, socket or device, and a name that is not UTF-8; a link to a file
inside the folder is stored as that file. Files then stream through the blob store,
never held whole in memory, several at once (by default two per core, so that one
file's disk write overlaps another's hashing): every core hashes. Each blob stays a
temporary file until every file of the tree is written, so a put that fails midway
publishes nothing.

``get`` refuses a manifest naming an absolute path, ``..``, or a path both as a file
and as a folder before it writes a byte, verifies every file as it copies it, builds
the tree in a temporary folder beside ``DEST`` and renames it into place only when
every file checked out, so ``DEST`` appears complete or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from factory.errors import InvalidInputError, NotFoundError
from factory.store._blobfs import NotRegularFile, open_regular
from factory.store._digest import canonical_json, check_digest, is_digest, sha256_digest

if TYPE_CHECKING:
    from factory.store._parts import StoreParts
    from factory.store.artifacts import Artifact
    from factory.store.blobs import PendingBlob
    from factory.store._hashing import VerifyingReader

__all__ = ["TREE_FORMAT", "TreeEntry", "TreeManifest", "TreeStore"]

log = logging.getLogger(__name__)

TREE_FORMAT = "factory.tree/v1"
Progress = Callable[[int], None]
T = TypeVar("T")
R = TypeVar("R")


class TreeEntry(NamedTuple):
    """One file of a tree: its blob, its size in bytes, and its executable bit."""

    digest: str
    size: int
    executable: bool


@dataclass(frozen=True)
class TreeManifest:
    """What a tree holds: relative path -> ``TreeEntry``; ``digest`` names the whole tree."""

    files: Mapping[str, TreeEntry]

    @property
    def size(self) -> int:
        """The bytes of all files together."""
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> bytes:
        """The canonical JSON whose SHA-256 is the tree's digest."""
        files = {path: {"digest": e.digest, "size": e.size, "executable": e.executable}
                 for path, e in self.files.items()}
        return canonical_json({"format": TREE_FORMAT, "files": files})

    @property
    def digest(self) -> str:
        return sha256_digest(self.to_json())

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "the manifest") -> TreeManifest:
        """Parse and check a manifest: well-formed entries, and every path safe to write under a folder."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != TREE_FORMAT or not isinstance(doc.get("files"), dict):
                raise ValueError(f"not a {TREE_FORMAT} manifest")
            files = {}
            for path, entry in doc["files"].items():
                if (not isinstance(entry, dict) or set(entry) != {"digest", "size", "executable"}
                        or not isinstance(entry["digest"], str) or not is_digest(entry["digest"])
                        or type(entry["size"]) is not int or entry["size"] < 0
                        or not isinstance(entry["executable"], bool)):
                    raise ValueError(f"the entry of {path!r} must hold a digest, a size and an executable flag")
                files[path] = TreeEntry(entry["digest"], entry["size"], entry["executable"])
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{where} is not a tree manifest ({exc}): give the digest of a tree") from None
        check_paths(files, where)
        return cls(files)


def check_paths(paths: Iterable[str], where: str) -> None:
    """Refuse paths that would land outside a folder, or a path used both as a file and as a folder."""
    seen = set()
    folders = set()
    for path in paths:
        parts = path.split("/")
        if (not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts)
                or "\\" in path or "\0" in path):
            raise InvalidInputError(
                f"{where} names the path {path!r}, which is absolute, empty or climbs out with '..': "
                "refused before anything was written (trees hold relative paths inside one folder)")
        seen.add(path)
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(seen & folders)
    if clash:
        raise InvalidInputError(f"{where} names {clash[0]!r} both as a file and as a folder: refused")


@dataclass(frozen=True)
class _Source:
    """A file found by the scan: where to read it and what the tree records."""

    path: str
    read_from: str
    size: int
    executable: bool


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _executable(mode: int) -> bool:
    return bool(mode & stat.S_IXUSR)


def scan(root: Path) -> list[_Source]:
    """Every file under ``root``, checked; raises before anything is read if one may not go in a tree."""
    real_root = os.path.realpath(root)
    out: list[_Source] = []
    pending = [("", os.fspath(root))]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                rel = prefix + entry.name
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidInputError(
                        f"{os.fsencode(entry.path)!r} in {root} has a name that is not UTF-8: rename it") from None
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    pending.append((rel + "/", entry.path))
                elif stat.S_ISREG(st.st_mode):
                    out.append(_Source(rel, entry.path, st.st_size, _executable(st.st_mode)))
                elif stat.S_ISLNK(st.st_mode):
                    out.append(_through_link(root, real_root, rel, entry.path))
                else:
                    raise InvalidInputError(
                        f"{rel} in {root} is {_kind(st.st_mode)}: a tree holds regular files only; "
                        "remove it or copy its content into a file")
    return out


def _through_link(root: Path, real_root: str, rel: str, path: str) -> _Source:
    target = os.path.realpath(path)
    if os.path.commonpath([real_root, target]) != real_root:
        raise InvalidInputError(
            f"{rel} in {root} is a link to {target}, outside the folder: refused, nothing was stored. "
            "Copy the file in instead of linking to it")
    try:
        st = os.stat(target)
    except OSError:
        raise InvalidInputError(f"{rel} in {root} is a link to {target}, which does not exist: remove it") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else _kind(st.st_mode)
        raise InvalidInputError(
            f"{rel} in {root} is a link to {what} ({target}): a tree stores links to files only; "
            "replace the link with what it points to")
    return _Source(rel, target, st.st_size, _executable(st.st_mode))


def _open_regular(path: str):
    """Open a file for reading, refusing anything that became a non-file since the scan."""
    try:
        return open_regular(path, follow_links=False)
    except NotRegularFile:
        raise InvalidInputError(f"{path} is no longer a regular file: the folder changed during the put; "
                                "put it again once it is still") from None


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    # Two per core: while one file's bytes wait on the disk another's are hashed.
    return max(2, min(32, 2 * cores))


class TreeStore:
    """Puts folders into the store as trees and gets them back, verified."""

    def __init__(self, parts: StoreParts, *, workers: int | None = None):
        self._parts = parts
        self.workers = workers or _default_workers()

    @property
    def _blobs(self):
        return self._parts.blobs

    # -- writing ---------------------------------------------------------------------
    def put(self, path: str | os.PathLike[str], *, name: str | None = None, parents: Iterable[str] = (),
            progress: Progress | None = None) -> Artifact:
        """Store the folder at ``path`` as a ``tree`` artifact; nothing is visible unless all of it is stored."""
        from factory.store.artifacts import ArtifactKind

        root = Path(path)
        if not root.is_dir():
            raise InvalidInputError(f"cannot put {root} as a tree: it is not a folder (give a folder)")
        parents = list(parents)
        for parent in parents:
            if not self._parts.artifacts.exists(check_digest(parent)):
                raise NotFoundError(f"parent {parent} of the tree is not in the store: record the parent first")
        sources = scan(root)
        pending = self._write_all(sources, progress)
        manifest = TreeManifest({s.path: TreeEntry(p.digest, p.size, s.executable)
                                 for s, p in zip(sources, pending, strict=True)})
        unique = {}
        for blob in pending:
            if blob.digest in unique:  # the same content twice in one tree: one copy
                blob.discard()
            else:
                unique[blob.digest] = blob
        try:
            # Publishing checks a copy already stored (re-hashing it), so it runs in parallel too.
            _parallel(lambda blob: blob.commit(), list(unique.values()), self.workers)
        finally:
            for blob in pending:
                blob.discard()  # a no-op for the committed ones
        digest = self._blobs.put_bytes(manifest.to_json())
        log.info("stored tree %s: %d files, %d bytes", digest, len(manifest.files), manifest.size)
        return self._parts.artifacts.add(
            ArtifactKind.TREE, digest=digest, name=name if name is not None else root.resolve().name,
            metadata={"files": len(manifest.files), "size": manifest.size}, parents=parents)

    def _write_all(self, sources: list[_Source], progress: Progress | None) -> list[PendingBlob]:
        """Write every file to a temporary blob, several at once; on any failure discard them all."""
        report = _locked(progress)

        def write(source: _Source) -> PendingBlob:
            with _open_regular(source.read_from) as stream:
                size = os.fstat(stream.fileno()).st_size
                return self._blobs.write_from(stream, size_hint=size, progress=report)

        return _parallel(write, sources, self.workers, undo=lambda blob: blob.discard())

    # -- reading ---------------------------------------------------------------------
    def manifest(self, digest: str) -> TreeManifest:
        """The manifest of the tree ``digest`` (read verified, paths checked)."""
        check_digest(digest)
        if not self._blobs.exists(digest):
            raise NotFoundError(f"no tree {digest} in the store: check the digest (see 'factory lineage')")
        return TreeManifest.from_json(self._blobs.get(digest), where=f"tree {digest}")

    def open(self, digest: str, relpath: str) -> VerifyingReader:
        """One file of a tree as a stream, checked against its digest when read to the end."""
        entry = self._entry(digest, relpath)
        return self._blobs.open(entry.digest)

    def read_bytes(self, digest: str, relpath: str) -> bytes:
        """One (small) file of a tree, verified."""
        return self._blobs.get(self._entry(digest, relpath).digest)

    def _entry(self, digest: str, relpath: str) -> TreeEntry:
        entry = self.manifest(digest).files.get(relpath)
        if entry is None:
            raise NotFoundError(f"tree {digest} has no file {relpath!r}: list its files with store.trees.manifest")
        return entry

    def get(self, digest: str, dest: str | os.PathLike[str], *, progress: Progress | None = None) -> Path:
        """Write the tree's files under ``dest`` (new, or an empty folder), every file verified."""
        manifest = self.manifest(digest)
        dest = Path(dest)
        if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
            raise InvalidInputError(f"{dest} exists and is not an empty folder: choose a new folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
        staging.mkdir()
        try:
            self._get_all(manifest, staging, progress)
            os.replace(staging, dest)  # an empty DEST folder is replaced; anything else fails here
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dest

    def _get_all(self, manifest: TreeManifest, staging: Path, progress: Progress | None) -> None:
        report = _locked(progress)
        real_staging = os.path.realpath(staging)
        for folder in sorted({p.rpartition("/")[0] for p in manifest.files} - {""}):
            os.makedirs(staging / folder, exist_ok=True)

        def fetch(item: tuple[str, TreeEntry]) -> None:
            path, entry = item
            target = staging / path
            # The paths were checked, and only this process creates folders under the
            # staging folder; check anyway that nothing redirects a write outside it.
            if os.path.commonpath([real_staging, os.path.realpath(target.parent)]) != real_staging:
                raise InvalidInputError(f"{path} would be written outside {staging}: refused")
            self._blobs.get_to(entry.digest, target, progress=report)
            if entry.executable:
                mode = os.stat(target).st_mode
                os.chmod(target, mode | (mode & 0o444) >> 2)  # x wherever r is, as git does

        _parallel(fetch, list(manifest.files.items()), self.workers)


def _parallel(fn: Callable[[T], R], items: list[T], workers: int, *,
              undo: Callable[[R], object] | None = None) -> list[R]:
    """``fn`` over ``items`` on ``workers`` threads, results in order.

    On the first failure the items not started are cancelled, the running ones are
    waited for, ``undo`` is applied to every result made, and the failure is raised.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)
            if undo is not None:
                for future in futures:
                    if not future.cancelled() and future.exception() is None:
                        undo(future.result())
            raise


def _locked(progress: Progress | None) -> Progress | None:
    """``progress`` made safe to call from several worker threads."""
    if progress is None:
        return None
    lock = threading.Lock()

    def report(n: int) -> None:
        with lock:
            progress(n)

    return report
