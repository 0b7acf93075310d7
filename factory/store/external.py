"""External artifacts: data that lives outside the store, recorded as an input.

A file a dataset version was read from, a feature view's definition, an imported
embedding file: each is recorded as an ``external`` artifact with its URI, size,
SHA-256 and modification time, and becomes a parent of what was made from it, so
lineage starts at the file and not at a bare version. The bytes stay where they are
unless ``copy=True`` also stores them as a blob (``metadata["blob"]``).

The artifact's digest is over (URI, size, SHA-256, mtime): the same file, unchanged,
records the same artifact; a changed one records another.
"""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from factory.errors import InvalidInputError
from factory.store.kinds import ArtifactKind

if TYPE_CHECKING:
    from factory.store._parts import StoreParts
    from factory.store.artifacts import Artifact

__all__ = ["record_external", "file_uri"]

_CHUNK = 4 << 20


def file_uri(path: str | os.PathLike[str]) -> str:
    """``file://<host>/<absolute path>``: a local file named so that another host's file is another file."""
    return f"file://{socket.gethostname()}{os.path.abspath(os.fspath(path))}"


def _describe_local(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise InvalidInputError(f"cannot record {path} as an input: no such file (give the path of a readable file)")
    try:
        with open(path, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        stat = os.stat(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return {"uri": file_uri(path), "size": stat.st_size, "sha256": "sha256:" + sha,
            "mtime": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="microseconds")}


def _describe_remote(uri: str) -> dict[str, Any]:
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise InvalidInputError(f"cannot record {uri} as an input: it is not a file")
        hasher = hashlib.sha256()
        with filesystem.open_input_stream(path) as stream:
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
    except (OSError, ValueError) as exc:  # pyarrow raises these for unknown schemes and unreachable stores
        raise InvalidInputError(f"cannot read {uri}: {exc}") from exc
    mtime = info.mtime.astimezone(UTC).isoformat(timespec="microseconds") if info.mtime else None
    return {"uri": uri, "size": info.size, "sha256": "sha256:" + hasher.hexdigest(), "mtime": mtime}


def record_external(store: StoreParts, source: str | os.PathLike[str], *, copy: bool = False,
                    name: str | None = None) -> Artifact:
    """Record the file or URI ``source`` as an ``external`` artifact (hashed, not copied
    unless ``copy``); recording it again unchanged returns the same artifact."""
    text = os.fspath(source)
    if text.startswith("file://"):
        text = urlparse(text).path
    remote = "://" in text
    meta = _describe_remote(text) if remote else _describe_local(text)
    name = name or os.path.basename(text.rstrip("/"))
    if copy:
        if remote:
            from pyarrow import fs as pafs

            filesystem, path = pafs.FileSystem.from_uri(text)
            with filesystem.open_input_stream(path) as stream:
                blob = store.put_blob(stream, name=name)
        else:
            blob = store.put_blob(text, name=name)
        if blob.digest != meta["sha256"]:
            raise InvalidInputError(f"{text} changed while it was recorded: record it again once it is written")
        meta["blob"] = blob.digest
    return store.artifacts.add(ArtifactKind.EXTERNAL, metadata=meta, name=name)
