"""Immutable, content-addressed blobs on any ``pyarrow.fs`` filesystem.

A blob with digest ``sha256:<d>`` lives at ``<root>/<d[:2]>/<d>``. ``put`` hashes while
it streams (one read of the source), writes to a temporary name under ``<root>/tmp``
and renames into place, so a reader never sees a partial blob and a writer killed
midway leaves only a stray temporary file. On object storage, which has no rename,
the temporary object's size is checked and a server-side copy publishes it (see
``_fs.publish_object``); on S3 a file or bytes in memory are hashed first and sent in
parts straight to their final key, where they appear only once the upload, verified,
completes (see ``_s3put``). A put that finds its blob already stored checks the stored
copy and leaves it untouched when it is intact; a copy that fails its hash
(truncated, a flipped byte, a link or FIFO in its place) is replaced atomically by
the new one, so putting the original again repairs a corrupt blob (on object storage
that check reads the stored copy back). ``get`` re-hashes what it reads and raises
``CorruptBlobError`` rather than return bytes that do not match their digest. Large
blobs on a local disk are written past the page cache (see ``_blobfs``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError
from factory.settings import Settings
import factory.store._fs as _fs
from factory.store._blobfs import ArrowFiles, Files, LocalFiles, NotRegularFile, ObjectFiles, Sink
from factory.store._digest import PREFIX, hex_of
from factory.store._hashing import (CHUNK, HashingReader, MemoryReader, Reread, VerifyingReader, copy_hashed,
                                    corrupt_message)
from factory.store._s3put import MultipartUpload, Read
from factory.store._staged import StagedBlob
from factory.store._paths import check_output_path

__all__ = ["BlobStore", "CorruptBlob", "PendingBlob", "StagedBlob", "DIRECT_MIN"]

log = logging.getLogger(__name__)

_TMP = "tmp"
NOT_REGULAR = "not a regular file"
Progress = Callable[[int], None]

class _Nowhere:
    """A sink that keeps nothing: ``copy_hashed`` into it only hashes."""

    def write(self, data) -> None:
        pass


_NOWHERE = _Nowhere()

# Blobs at least this large are written (and fetched with ``get_to``) past the page
# cache on a local disk; smaller ones are often read again soon and cost little there.
DIRECT_MIN = 16 << 20


@dataclass(frozen=True)
class CorruptBlob:
    """A blob found by ``verify`` that cannot be trusted: ``problem`` says how.

    ``corrupt``: its bytes no longer hash to its digest; ``missing``: nothing is stored
    at its path; ``unreadable``: something is there but cannot be read as a blob (a
    folder, a link or a FIFO in its place, a file it has no permission to read).
    """

    digest: str
    location: str
    reason: str
    problem: str = "corrupt"


class PendingBlob:
    """A blob written completely to a temporary file, invisible until ``commit``.

    Several pending blobs can be committed together once all of them are written
    (a tree does so), and ``discard`` removes one without a trace. On S3, ``tmp`` may be
    an upload to the final key (completed by ``commit``, aborted by ``discard``), or
    ``None`` when the blob was found stored intact and nothing was sent.
    """

    def __init__(self, blobs: BlobStore, tmp: str | MultipartUpload | None, digest: str, size: int):
        self.blobs = blobs
        self.tmp = tmp
        self.digest = digest
        self.size = size
        self._done = False

    def commit(self) -> str:
        """Publish the blob under its digest (repairing a corrupt stored copy); return the digest."""
        if self._done:
            raise RuntimeError(f"the pending blob {self.digest} was already committed or discarded")
        self._done = True
        if self.tmp is None:
            return self.digest
        try:
            self.blobs._publish(self.tmp, self.digest, self.size)
        except BaseException:
            self.blobs._discard(self.tmp)
            raise
        return self.digest

    def discard(self) -> None:
        if not self._done:
            self._done = True
            if self.tmp is not None:
                self.blobs._discard(self.tmp)


class BlobStore:
    """Content-addressed blobs under one root, local or remote."""

    def __init__(self, root: str | os.PathLike[str], *, filesystem=None, fsync: bool = False,
                 settings: Settings | None = None, home: str | None = None):
        root = os.fspath(root)
        self.uri = root
        self._home = home  # the store home, named in errors about reaching it
        self.fsync = fsync
        self._fs = filesystem
        self._settings = settings
        self._object_store = _fs.is_object_store(root)
        if filesystem is not None:
            self.root = root.rstrip("/")
        elif "://" in root:
            # Resolved on first I/O (see ``fs``): building a store touches no network.
            self.root = _fs.check_home(root).split("://", 1)[1]
        else:
            self.root = os.path.abspath(root)
        # A local root goes through os: no pyarrow import, and direct I/O for large blobs.
        # Any other root gets its ``Files`` when the filesystem is first needed.
        self._opened_files: Files | None = LocalFiles() if filesystem is None and "://" not in root else None
        self._tmp_ready = False
        #: run once, before the first blob this object publishes (the store checks its identity there)
        self.before_first_write: Callable[[], None] | None = None
        # Trees publish from several threads: the others wait until the hook has run.
        self._hook_lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["before_first_write"] = None
        del state["_hook_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._hook_lock = threading.Lock()

    @property
    def fs(self):
        """The ``pyarrow.fs`` filesystem of the root (for callers that want one)."""
        if self._fs is None:
            if "://" in self.uri:
                self._fs, _ = _fs.filesystem(self.uri, self.settings, label=self._home)
            else:
                from pyarrow import fs as pafs

                self._fs = pafs.LocalFileSystem()
        return self._fs

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def local(self) -> bool:
        """Whether the root is a local folder reached through ``os`` (paths are real paths)."""
        return isinstance(self._opened_files, LocalFiles)

    @property
    def _files(self) -> Files:
        if self._opened_files is None:
            self._opened_files = (ObjectFiles(self.fs, self.settings, multipart=_fs.scheme_of(self.uri) == "s3")
                                  if self._object_store else ArrowFiles(self.fs))
        return self._opened_files

    # -- locations -------------------------------------------------------------------
    def path(self, digest: str) -> str:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        h = hex_of(digest)
        return f"{self.root}/{h[:2]}/{h}"

    def exists(self, digest: str) -> bool:
        return self._files.stat(self.path(digest))[0] == "file"

    def size(self, digest: str) -> int:
        kind, size = self._files.stat(self.path(digest))
        if kind != "file":
            raise NotFoundError(f"no blob {digest} in {self.uri}: check the digest or the store root (FACTORY_HOME)")
        return size

    # -- writing ---------------------------------------------------------------------
    def put(self, source: bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | HashingReader | StagedBlob,
            *, progress: Progress | None = None) -> str:
        """Store ``source`` (bytes, a file path, a readable binary stream, a running
        ``HashingReader`` or this store's ``StagedBlob``); return its digest."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self.put_bytes(source)
        if isinstance(source, HashingReader):
            return self.put_hashed(source, progress=progress)
        if isinstance(source, StagedBlob):
            if source.blobs.root != self.root:
                raise ValueError(f"a blob staged in {source.blobs.uri} cannot be committed to {self.uri}")
            return source.commit(progress=progress)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise InvalidInputError(f"cannot put {path}: no such file (give the path of a readable file)")
            with HashingReader.open(path) as reader:
                return self.put_hashed(reader, progress=progress)
        if hasattr(source, "readinto") or hasattr(source, "read"):
            return self.put_stream(source, progress=progress)
        raise InvalidInputError(f"cannot put a {type(source).__name__}: give bytes, a file path or a binary stream")

    def put_bytes(self, data: bytes | bytearray | memoryview) -> str:
        size = memoryview(data).nbytes
        if self._multipart:
            view = memoryview(data).cast("B")
            digest = PREFIX + hashlib.sha256(view).hexdigest()
            return self._upload(digest, size, lambda offset, n: bytes(view[offset:offset + n])).commit()
        if size >= DIRECT_MIN:  # through aligned buffers, so that it can bypass the page cache
            return self.write_from(MemoryReader(data), size_hint=size).commit()
        digest = PREFIX + hashlib.sha256(data).hexdigest()
        if self._intact(digest, size) is not None:
            tmp = self._tmp_path()
            out = self._open_tmp(tmp)
            try:
                out.write(data)
            finally:
                out.close()
            self._publish(tmp, digest, size)
        return digest

    def put_stream(self, stream: BinaryIO, *, progress: Progress | None = None) -> str:
        """Hash and copy ``stream`` in one pass (see ``HashingReader``)."""
        with HashingReader(stream) as reader:
            return self.put_hashed(reader, progress=progress)

    def put_hashed(self, reader: HashingReader, *, progress: Progress | None = None) -> str:
        """Write out what ``reader`` reads and hashes, then publish it under its digest.

        The reader runs ahead on its own threads while this one writes the very
        buffers it hashed, so the wall time approaches hashing alone (measured in
        ``benchmarks/bench_store_put.py`` against ``openssl dgst``).
        """
        return self.write(reader, progress=progress).commit()

    def write(self, reader: HashingReader, *, progress: Progress | None = None,
              opened: Callable[[], object] | None = None) -> PendingBlob:
        """Write everything ``reader`` hashes to a temporary file; nothing is visible until ``commit``.

        ``opened`` is called once the temporary file is open (the head start of the
        CLI waits for it before loading the rest of the command line). On S3 a regular
        file is hashed to its end first, then uploaded to its final key (see ``_upload``).
        """
        if self._multipart and reader.rereadable:
            # The S3 client (boto3's import: 0.3-1 s) is made while the file is hashed.
            threading.Thread(target=self._files.connect, name="s3-client", daemon=True).start()
            try:
                if opened is not None:
                    opened()
                size = reader.drain()
                with reader.rereader() as again:
                    return self._upload(reader.digest, size, again.read, progress, reader.name)
            except BaseException:
                reader.close()
                raise

        def fill(out) -> tuple[str, int]:
            written = 0
            try:
                if opened is not None:
                    opened()
                for chunk in reader.chunks():
                    out.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except BaseException:
                reader.close()
                raise
            return reader.digest, written

        return self._write_tmp(reader.size_hint, fill)

    def write_from(self, stream: BinaryIO, *, size_hint: int | None = None,
                   progress: Progress | None = None) -> PendingBlob:
        """Read, hash and write ``stream`` on the calling thread, one buffer at a time.

        For callers that copy many files at once (a tree runs one per worker thread),
        where the parallelism comes from the files rather than from a pipeline. On S3 a
        regular file is hashed to its end first, then uploaded to its final key.
        """
        if self._multipart and (again := Reread.of(stream, getattr(stream, "name", None))) is not None:
            with again:
                digest, size = copy_hashed(stream, _NOWHERE)
                return self._upload(digest, size, again.read, progress, again.name)
        return self._write_tmp(size_hint, lambda out: copy_hashed(stream, out, progress))

    def _write_tmp(self, size_hint: int | None, fill: Callable[[Sink], tuple[str, int]]) -> PendingBlob:
        """A temporary file filled by ``fill`` (which returns the digest and size written), or none at all."""
        tmp = self._tmp_path()
        try:
            out = self._open_tmp(tmp, direct=size_hint is not None and size_hint >= DIRECT_MIN)
            try:
                digest, written = fill(out)
            finally:
                out.close()
            if self.fsync:
                self._files.sync(tmp)
        except BaseException:
            self._discard(tmp)
            raise
        return PendingBlob(self, tmp, digest, written)

    @property
    def _multipart(self) -> bool:
        """Whether blobs whose digest is known go in parts straight to their final key (S3)."""
        return self._object_store and self._files.multipart

    def _upload(self, digest: str, size: int, read: Read, progress: Progress | None = None,
                name: str | None = None) -> PendingBlob:
        """Send a blob whose digest is known to its final key, where it stays invisible until
        ``commit``; nothing is sent when an intact copy is stored already."""
        if self._intact(digest, size) is None:
            if progress is not None:
                progress(size)
            return PendingBlob(self, None, digest, size)
        upload = self._files.upload(self.path(digest), read, size, digest, progress=progress, name=name)
        return PendingBlob(self, upload, digest, size)

    def stage(self, reader: HashingReader, *, start: bool = True) -> StagedBlob:
        """Start writing what ``reader`` hashes on a thread of its own; publish with ``commit``.
        With ``start=False`` the caller starts it (``StagedBlob.start``) once it holds it."""
        return StagedBlob(self, reader, start=start)

    def _open_tmp(self, tmp: str, *, direct: bool = False):
        if not self._tmp_ready:
            self._files.makedirs(f"{self.root}/{_TMP}")
            self._tmp_ready = True
        return self._files.open_write(tmp, direct=direct)

    def _tmp_path(self) -> str:
        return f"{self.root}/{_TMP}/{uuid.uuid4().hex}.part"

    def _intact(self, digest: str, size: int) -> str | None:
        """None when the stored copy of ``digest`` is intact, else what is wrong with it."""
        location = self.path(digest)
        kind, stored = self._files.stat(location)
        if kind == "missing":
            return "missing"
        if kind == "folder":
            raise CorruptBlobError(
                f"a folder stands where blob {digest} belongs ({location}): move it away and put the blob again",
                digest, location)
        if kind != "file":
            return NOT_REGULAR
        if stored != size:
            return f"{stored} bytes instead of {size}"
        problem = self.verify(digest)
        return None if problem is None else problem.reason

    def _publish(self, tmp: str, digest: str, size: int) -> None:
        """Move a fully written temporary file into place, unless an intact copy is there already."""
        final = self.path(digest)
        problem = self._intact(digest, size)
        if problem is None:
            self._discard(tmp)
            return
        if self.before_first_write is not None:
            with self._hook_lock:
                if (hook := self.before_first_write) is not None:
                    try:
                        hook()
                    except BaseException:
                        self._discard(tmp)
                        raise
                    self.before_first_write = None
        if problem != "missing":
            log.warning("replacing the corrupt copy of blob %s at %s (%s)", digest, final, problem)
        self._files.publish(tmp, final, size)

    def _discard(self, tmp: str) -> None:
        """Remove a temporary file; nothing to do when the filesystem was never opened (nothing was written)."""
        if self._opened_files is None:
            return
        self._files.delete(tmp)

    # -- reading ---------------------------------------------------------------------
    def _open(self, digest: str) -> BinaryIO:
        location = self.path(digest)
        try:
            return self._files.open_read(location)
        except FileNotFoundError:
            raise NotFoundError(f"no blob {digest} in {self.uri}: check the digest or the store root (FACTORY_HOME)") from None
        except NotRegularFile:
            raise CorruptBlobError(
                f"blob {digest} at {location} is not a regular file: remove what stands there and re-put the "
                "original; run 'factory store verify' to find others", digest, location) from None

    def open(self, digest: str) -> VerifyingReader:
        """The blob as a stream that checks its digest when read to the end (see ``VerifyingReader``)."""
        return VerifyingReader(self._open(digest), digest, self.path(digest))

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against ``digest``."""
        with self._open(digest) as f:
            data = f.read()
        actual = PREFIX + hashlib.sha256(data).hexdigest()
        if actual != digest:
            location = self.path(digest)
            raise CorruptBlobError(corrupt_message(digest, location, actual), digest, location)
        return data

    def get_to(self, digest: str, dest: str | os.PathLike[str], *, progress: Progress | None = None) -> Path:
        """Copy the blob to a new local file, verifying as it streams; ``dest`` appears only if good."""
        dest = check_output_path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            with self._open(digest) as src:
                size = self._files.stat(self.path(digest))[1] or 0
                out = LocalFiles().open_write(os.fspath(tmp), direct=size >= DIRECT_MIN)
                try:
                    actual, _ = copy_hashed(src, out, progress)
                finally:
                    out.close()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if actual != digest:
            tmp.unlink(missing_ok=True)
            location = self.path(digest)
            raise CorruptBlobError(corrupt_message(digest, location, actual), digest, location)
        os.replace(tmp, dest)
        return dest

    # -- listing and checking --------------------------------------------------------
    def entries(self) -> Iterator[tuple[str, bool]]:
        """Every digest-named entry under the root and whether it is a regular file (temporaries excluded).

        A link, FIFO or folder standing in a blob's place is listed too, as not regular,
        so that ``verify_all`` can report it.
        """
        for path, regular in self._files.entries(self.root):
            parent, _, name = path.rpartition("/")
            shard = parent.rpartition("/")[2]
            if len(name) == 64 and shard == name[:2] and all(c in "0123456789abcdef" for c in name):
                yield PREFIX + name, regular

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (temporary files excluded)."""
        return (digest for digest, regular in self.entries() if regular)

    def verify(self, digest: str) -> CorruptBlob | None:
        """Re-hash one blob; ``None`` when it is intact, else what is wrong (missing, unreadable, corrupt)."""
        location = self.path(digest)
        hasher = hashlib.sha256()
        try:
            with self._files.open_read(location) as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return CorruptBlob(digest, location, "no file at its path", "missing")
        except NotRegularFile:
            return CorruptBlob(digest, location, f"{NOT_REGULAR}: a folder, a link or a FIFO stands in its place",
                               "unreadable")
        except OSError as exc:
            return CorruptBlob(digest, location, f"cannot be read ({exc})", "unreadable")
        actual = PREFIX + hasher.hexdigest()
        if actual != digest:
            return CorruptBlob(digest, location, f"content hashes to {actual}")
        return None

    def verify_all(self, *, progress: Progress | None = None) -> list[CorruptBlob]:
        """Re-hash every blob; return the ones that are corrupt or cannot be read (a folder in a blob's place too)."""
        bad = []
        for digest, _ in self.entries():
            problem = self.verify(digest)
            if problem is not None:
                bad.append(problem)
            if progress is not None:
                progress(1)
        return bad

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary files left by writers that died (on S3, also abort their unfinished
        uploads, which show nothing but keep their parts); return how many."""
        cutoff = time.time() - older_than_s
        files = self._files
        removed = files.abort_stale(self.root, older_than_s) if isinstance(files, ObjectFiles) else 0
        for path, mtime in self._files.list_files(f"{self.root}/{_TMP}", recursive=False):
            if mtime is not None and mtime < cutoff:
                self._files.delete(path)
                removed += 1
        return removed
