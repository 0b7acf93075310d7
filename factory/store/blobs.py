"""Immutable, content-addressed blobs on any ``pyarrow.fs`` filesystem.

A blob with digest ``sha256:<d>`` lives at ``<root>/<d[:2]>/<d>``. ``put`` hashes while
it streams (one read of the source), writes to a temporary name under ``<root>/tmp``
and renames into place, so a reader never sees a partial blob and a writer killed
midway leaves only a stray temporary file. On object storage, which has no rename,
the temporary object's size is checked and a server-side copy publishes it (see
``_fs.publish_object``). A blob that exists is never rewritten.
``get`` re-hashes what it reads and raises ``CorruptBlobError`` rather than return
bytes that do not match their digest.
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
from factory.store import _fs
from factory.store._digest import PREFIX, hex_of
from factory.store._hashing import CHUNK, HashingReader
from factory.store._paths import check_output_path

__all__ = ["BlobStore", "CorruptBlob", "StagedBlob"]

log = logging.getLogger(__name__)

_TMP = "tmp"
Progress = Callable[[int], None]


@dataclass(frozen=True)
class CorruptBlob:
    """A blob found by ``verify`` that cannot be trusted: ``problem`` says how.

    ``corrupt``: its bytes no longer hash to its digest; ``missing``: nothing is stored
    at its path; ``unreadable``: something is there but cannot be read as a blob (a
    folder, a file it has no permission to read).
    """

    digest: str
    location: str
    reason: str
    problem: str = "corrupt"


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
            # A local root needs no pyarrow until the first I/O: the CLI starts hashing
            # while pyarrow (about 0.1 s of imports) loads in the writer thread.
            self.root = os.path.abspath(root)
        self._tmp_ready = False
        #: run once, before the first blob this object publishes (the store checks its identity there)
        self.before_first_write: Callable[[], None] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["before_first_write"] = None
        return state

    @property
    def fs(self):
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
    def _local(self) -> bool:
        return type(self.fs).__name__ == "LocalFileSystem"

    # -- locations -------------------------------------------------------------------
    def path(self, digest: str) -> str:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        h = hex_of(digest)
        return f"{self.root}/{h[:2]}/{h}"

    def exists(self, digest: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.path(digest)).type == pafs.FileType.File

    def size(self, digest: str) -> int:
        info = self.fs.get_file_info(self.path(digest))
        if info.size is None:
            raise NotFoundError(f"no blob {digest} in {self.uri}: check the digest or the store root (FACTORY_HOME)")
        return info.size

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
        digest = PREFIX + hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            tmp = self._tmp_path()
            with self._open_tmp(tmp) as out:
                out.write(data)
            self._publish(tmp, digest, len(data))
        return digest

    def put_stream(self, stream: BinaryIO, *, progress: Progress | None = None) -> str:
        """Hash and copy ``stream`` in one pass (see ``HashingReader``)."""
        with HashingReader(stream) as reader:
            return self.put_hashed(reader, progress=progress)

    def put_hashed(self, reader: HashingReader, *, progress: Progress | None = None) -> str:
        """Write out what ``reader`` reads and hashes, then publish it under its digest.

        The reader runs ahead on its own threads while this one writes, so the wall
        time approaches hashing alone (measured in ``benchmarks/bench_store_put.py``
        against ``openssl dgst``; reading in the hashing thread cost about 15 % more).
        """
        tmp = self._tmp_path()
        size = self._write_tmp(reader, tmp, progress)
        return self._finish(tmp, reader.digest, size)

    def stage(self, reader: HashingReader) -> StagedBlob:
        """Start writing what ``reader`` hashes on a thread of its own; publish with ``commit``."""
        return StagedBlob(self, reader)

    def _write_tmp(self, reader: HashingReader, tmp: str, progress: Progress | None,
                   opened: Callable[[], object] | None = None) -> int:
        """Write what ``reader`` hands out to ``tmp``; the number of bytes written."""
        written = 0
        try:
            # Opening here lets the reader's first reads and hashes run while the
            # filesystem layer (pyarrow) is still being imported and set up.
            out = self._open_tmp(tmp)
            if opened is not None:
                opened()
            try:
                for chunk in reader.chunks():
                    out.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            finally:
                out.close()
        except BaseException:
            reader.close()
            self._discard(tmp)
            raise
        return written

    def _finish(self, tmp: str, digest: str, size: int | None = None) -> str:
        if self.fsync and self._local:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._publish(tmp, digest, size)
        return digest

    def _open_tmp(self, tmp: str):
        if not self._tmp_ready:
            if not self._object_store:  # object stores have no folders to make
                self.fs.create_dir(f"{self.root}/{_TMP}", recursive=True)
            self._tmp_ready = True
        if self._object_store:
            return _fs.open_upload(self.fs, tmp)
        return self.fs.open_output_stream(tmp)

    def _tmp_path(self) -> str:
        return f"{self.root}/{_TMP}/{uuid.uuid4().hex}.part"

    def _publish(self, tmp: str, digest: str, size: int | None = None) -> None:
        """Move a fully written temporary file into place, unless the blob already exists."""
        final = self.path(digest)
        if self.exists(digest):
            self._discard(tmp)
            return
        if self.before_first_write is not None:
            hook, self.before_first_write = self.before_first_write, None
            try:
                hook()
            except BaseException:
                self.before_first_write = hook
                self._discard(tmp)
                raise
        if self._object_store:
            _fs.publish_object(self.fs, tmp, final, size, self.settings)
            return
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        # Rename is atomic on local disks; concurrent writers of the same digest race
        # harmlessly, since every one of them renames identical bytes.
        self.fs.move(tmp, final)

    def _discard(self, tmp: str) -> None:
        if self._fs is None:  # the filesystem never opened, so nothing was written
            return
        try:
            self.fs.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass

    # -- reading ---------------------------------------------------------------------
    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against ``digest``."""
        location = self.path(digest)
        try:
            with self.fs.open_input_stream(location) as f:
                data = f.read()
        except FileNotFoundError:
            raise NotFoundError(f"no blob {digest} in {self.uri}: check the digest or the store root (FACTORY_HOME)") from None
        actual = PREFIX + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CorruptBlobError(_corrupt_message(digest, location, actual), digest, location)
        return data

    def get_to(self, digest: str, dest: str | os.PathLike[str], *, progress: Progress | None = None) -> Path:
        """Copy the blob to a local file, verifying as it streams; ``dest`` appears only if good."""
        location = self.path(digest)
        dest = check_output_path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        hasher = hashlib.sha256()
        try:
            with self.fs.open_input_stream(location) as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise NotFoundError(f"no blob {digest} in {self.uri}: check the digest or the store root (FACTORY_HOME)") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        actual = PREFIX + hasher.hexdigest()
        if actual != digest:
            tmp.unlink(missing_ok=True)
            raise CorruptBlobError(_corrupt_message(digest, location, actual), digest, location)
        os.replace(tmp, dest)
        return dest

    # -- listing and checking --------------------------------------------------------
    def _entries(self) -> Iterator[tuple[str, bool]]:
        """Every digest-named entry under the root, and whether it is a regular file (temporaries excluded)."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        for info in infos:
            parent, _, name = info.path.rpartition("/")
            shard = parent.rpartition("/")[2]
            if len(name) == 64 and shard == name[:2] and all(c in "0123456789abcdef" for c in name):
                yield PREFIX + name, info.type == pafs.FileType.File

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (temporary files excluded)."""
        return (digest for digest, is_file in self._entries() if is_file)

    def verify(self, digest: str) -> CorruptBlob | None:
        """Re-hash one blob; ``None`` when it is intact, else what is wrong (missing, unreadable, corrupt)."""
        from pyarrow import fs as pafs

        location = self.path(digest)
        hasher = hashlib.sha256()
        try:
            kind = self.fs.get_file_info(location).type
            if kind == pafs.FileType.NotFound:
                return CorruptBlob(digest, location, "no file at its path", "missing")
            if kind != pafs.FileType.File:
                return CorruptBlob(digest, location, "a folder (or other non-file) stands where the blob should be",
                                   "unreadable")
            with self.fs.open_input_stream(location) as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return CorruptBlob(digest, location, "no file at its path", "missing")
        except OSError as exc:
            return CorruptBlob(digest, location, f"cannot be read ({exc})", "unreadable")
        actual = PREFIX + hasher.hexdigest()
        if actual != digest:
            return CorruptBlob(digest, location, f"content hashes to {actual}")
        return None

    def verify_all(self, *, progress: Progress | None = None) -> list[CorruptBlob]:
        """Re-hash every blob; return the ones that are corrupt or cannot be read (a folder in a blob's place too)."""
        bad = []
        for digest, _ in self._entries():
            problem = self.verify(digest)
            if problem is not None:
                bad.append(problem)
            if progress is not None:
                progress(1)
        return bad

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary files left by writers that died; return how many."""
        from pyarrow import fs as pafs

        cutoff = time.time() - older_than_s
        removed = 0
        for info in self.fs.get_file_info(pafs.FileSelector(f"{self.root}/{_TMP}", allow_not_found=True)):
            if info.type == pafs.FileType.File and info.mtime is not None and info.mtime.timestamp() < cutoff:
                self._discard(info.path)
                removed += 1
        return removed


class StagedBlob:
    """A blob being written into the store's temporary area by a thread of its own.

    Nothing is visible until ``commit`` publishes it under its digest; ``abort``
    stops the write and removes the temporary file. The CLI stages the file of
    ``factory store put`` while it is still parsing its arguments.
    """

    def __init__(self, blobs: BlobStore, reader: HashingReader):
        self.blobs = blobs
        self.reader = reader
        self._tmp = blobs._tmp_path()
        self._written = 0
        self._failure: list[BaseException] = []
        self._done = False
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._write, name="blob-stager", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            self.blobs._write_tmp(self.reader, self._tmp, self._count, opened=self._opened.set)
        except BaseException as exc:  # raised again by commit()
            self._failure.append(exc)
        finally:
            self._opened.set()

    def wait_opened(self, timeout: float | None = None) -> bool:
        """Wait until the temporary file is open (the filesystem layer loaded) or the write failed."""
        return self._opened.wait(timeout)

    def _count(self, n: int) -> None:
        self._written += n

    def commit(self, *, progress: Progress | None = None) -> str:
        """Wait for the write to end, then publish the blob; return its digest."""
        if self._done:
            raise RuntimeError("this staged blob was already committed or aborted")
        self._done = True
        reported = 0
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.1)
                if progress is not None and self._written > reported:
                    progress(self._written - reported)
                    reported = self._written
        except BaseException:
            self.reader.close()
            self._thread.join()
            self.blobs._discard(self._tmp)
            raise
        if self._failure:
            raise self._failure[0]
        if progress is not None and self._written > reported:
            progress(self._written - reported)
        return self.blobs._finish(self._tmp, self.reader.digest, self._written)

    def abort(self) -> None:
        """Stop writing and remove what was written; nothing becomes visible.

        Does nothing once ``commit`` has begun: from then on the commit owns the file.
        """
        if self._done:
            return
        self._done = True
        self.reader.close()
        self._thread.join()
        self.blobs._discard(self._tmp)

    close = abort  # what a HashingReader calls it: release, cancelling if unfinished


def _corrupt_message(digest: str, location: str, actual: str) -> str:
    return (
        f"blob {digest} at {location} is corrupt: its content hashes to {actual}. "
        "Restore it from a replica or re-put the original; run 'factory store verify' to find others"
    )
