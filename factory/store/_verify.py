"""Checking a whole store: every blob, everything the catalog refers to, every dataset file.

``verify_store`` reports what is missing and what cannot be read as well as what is
corrupt, and says what it could not check at all (dataset versions written before their
files' hashes were recorded), rather than counting those as verified:

- every blob on disk is re-hashed; a folder where a blob should be is unreadable;
- every artifact the catalog indexes must have its record blob, and a ``blob``,
  ``model`` or ``tree`` artifact the blobs that hold its content (for a tree, its
  manifest and every file the manifest names);
- every dataset version's files are re-hashed against its record; with ``deep``, each
  version's rows are read back and their canonical digest recomputed.

A home that does not exist is an error: there is nothing to verify. Nothing is created
to find things out (a home without a catalog has blobs and nothing indexed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from factory.store._store import Store
    from factory.store.artifacts import Artifact

__all__ = ["VerifyProblem", "VerifyReport", "verify_store"]


@dataclass(frozen=True)
class VerifyProblem:
    """One thing in the store that cannot be trusted.

    ``what``: blob, artifact record, content blob, tree manifest, dataset file or dataset content;
    ``digest``: the blob, or the artifact it belongs to; ``problem``: missing,
    unreadable or corrupt.
    """

    what: str
    digest: str
    location: str
    problem: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` checked and found; ``ok`` when nothing is missing, unreadable or corrupt."""

    home: str
    blobs: int
    artifacts: int
    dataset_files: int
    deep_datasets: int
    problems: tuple[VerifyProblem, ...]
    unverified: tuple[str, ...]  # dataset versions with no recorded file hashes

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, problem: str) -> int:
        return sum(p.problem == problem for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _require_home(store: Store) -> None:
    if store.remote:
        import pyarrow.fs as pafs

        from factory.store import _fs

        fs, root = _fs.filesystem(store.home, store.settings, label=store.home)  # the home's endpoint and keys
        if fs.get_file_info(root).type == pafs.FileType.NotFound:
            raise NotFoundError(f"no store at {store.home}: nothing is there; check --home or FACTORY_HOME")
        return
    if not os.path.exists(store.home):
        raise NotFoundError(f"no store at {store.home}: the folder does not exist; check --home or FACTORY_HOME")
    if not os.path.isdir(store.home):
        raise InvalidInputError(f"the store home {store.home} is a file, not a folder: check --home or FACTORY_HOME")


def _has_catalog(store: Store) -> bool:
    """False for a local SQLite catalog file that was never created (opening it would create it)."""
    path = getattr(store, "_catalog_path", None)
    return "catalog" in vars(store) or not isinstance(path, str) or "://" in path or os.path.exists(path)


def _content_blobs(store: Store, artifact: Artifact) -> list[str]:
    """The blobs that hold an artifact's content, for the kinds whose content is blobs.

    Raises ``InvalidInputError`` for a tree whose manifest blob is intact but is not a
    tree manifest.
    """
    kind = str(artifact.kind)
    if kind == "blob":
        return [artifact.digest]
    if kind == "model":
        files = artifact.metadata.get("files")
        return [artifact.digest, *(files.values() if isinstance(files, dict) else ())]
    if kind == "tree":
        return [artifact.digest, *_tree_files(store, artifact.digest)]
    return []


def _tree_files(store: Store, digest: str) -> list[str]:
    """The blobs of a tree's files, from its manifest; none when the manifest blob is missing or
    corrupt (reported as that blob's own problem)."""
    try:
        manifest = store.trees.manifest(digest)
    except (NotFoundError, CorruptBlobError):
        return []
    return sorted({entry.digest for entry in manifest.files.values()})


def _deep_problem(store: Store, artifact: Artifact, meta: Any) -> VerifyProblem | None:
    import lance
    import pyarrow as pa

    from factory.store._canonical import canonical_digest

    uri = store.uri(meta.location)
    where = f"{uri} (Lance version {meta.lance_version})"
    try:
        actual = canonical_digest(lance.dataset(uri, version=meta.lance_version, storage_options=store.storage_options).to_table(), meta.key)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return VerifyProblem("dataset content", artifact.digest, where, "unreadable", f"cannot read its rows ({exc})")
    if actual != artifact.digest:
        return VerifyProblem("dataset content", artifact.digest, where, "corrupt", f"its rows hash to {actual}")
    return None


def verify_store(store: Store, *, deep: bool = False, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check everything ``store`` holds (see the module docstring); raises only when there is no store."""
    from factory.store.datasets import DatasetMeta
    from factory.store.datasets._files import check_files

    _require_home(store)
    tick = progress or (lambda n: None)
    blobs = 0

    def blob_checked(n: int) -> None:
        nonlocal blobs
        blobs += n
        tick(n)

    problems: list[VerifyProblem] = []
    for bad in store.blobs.verify_all(progress=blob_checked):
        problems.append(VerifyProblem("blob", bad.digest, bad.location, bad.problem, bad.reason))
    present = set(store.blobs.digests())
    reported = {p.digest for p in problems}

    def require(digest: str, what: str, owner: str) -> bool:
        if digest in present:
            return True
        if digest not in reported:
            detail = "no blob at its path" + ("" if owner == digest else f" (it belongs to artifact {owner})")
            problems.append(VerifyProblem(what, digest, store.blobs.path(digest), "missing", detail))
            reported.add(digest)
        return False

    entries = store.catalog.artifacts() if _has_catalog(store) else []
    unverified: list[str] = []
    files_checked = deep_checked = 0
    for entry in entries:
        tick(1)
        if not require(entry.record_digest, "artifact record", entry.digest):
            continue
        try:
            artifact = store.artifacts.get(entry.digest)
            meta = artifact.meta(DatasetMeta) if str(artifact.kind) == "dataset" else None
        except (CorruptBlobError, ValueError) as exc:  # a corrupt record is reported above; an unparseable one here
            if entry.record_digest not in reported:
                problems.append(VerifyProblem("artifact record", entry.digest, store.blobs.path(entry.record_digest),
                                              "unreadable", f"not a valid artifact record ({str(exc)[:200]})"))
            continue
        try:
            content = _content_blobs(store, artifact)
        except InvalidInputError as exc:
            problems.append(VerifyProblem("tree manifest", artifact.digest, store.blobs.path(artifact.digest),
                                          "unreadable", str(exc)[:300]))
            content = []
        for digest in content:
            require(digest, "content blob", artifact.digest)
        if meta is None:
            continue
        if meta.files is None:
            unverified.append(artifact.digest)
        else:
            files_checked += len(meta.files)
            for p in check_files(store.uri(meta.location), meta.files, remember=False, settings=store.settings):
                problems.append(VerifyProblem("dataset file", artifact.digest, p.location, p.problem, p.detail))
        if deep:
            deep_checked += 1
            problem = _deep_problem(store, artifact, meta)
            if problem is not None:
                problems.append(problem)
    return VerifyReport(store.home, blobs, len(entries), files_checked, deep_checked, tuple(problems),
                        tuple(unverified))
