"""Immutable, content-addressed blobs on any ``pyarrow.fs`` filesystem.

A blob with digest ``sha256:<d>`` lives at ``<root>/<d[:2]>/<d>``. ``put`` hashes while
it streams (one read of the source), writes to a temporary name under ``<root>/tmp``
and renames into place, so a reader never sees a partial blob and a writer killed
midway leaves only a stray temporary file. A blob that exists is never rewritten.
``get`` re-hashes what it reads and raises ``CorruptBlobError`` rather than return
bytes that do not match their digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError
from factory.store._digest import PREFIX, check_digest, hex_of

__all__ = ["BlobStore", "CorruptBlob"]

log = logging.getLogger(__name__)

CHUNK = 8 << 20  # large enough that hashlib and file writes release the GIL for long stretches
# Read-ahead while the writer is slow to start (it imports pyarrow) or the disk lags.
_BUFFERS = 24
_TMP = "tmp"
Progress = Callable[[int], None]


@dataclass(frozen=True)
class CorruptBlob:
    """A blob found by ``verify_all`` whose bytes no longer match its digest."""

    digest: str
    location: str
    reason: str


def _filesystem(root: str):
    """Resolve ``root`` (a path or a URI) to a ``pyarrow.fs`` filesystem and a path on it."""
    from pyarrow import fs as pafs

    if "://" in root:
        filesystem, path = pafs.FileSystem.from_uri(root)
        return filesystem, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(root)


class BlobStore:
    """Content-addressed blobs under one root, local or remote."""

    def __init__(self, root: str | os.PathLike[str], *, filesystem=None, fsync: bool = False):
        root = os.fspath(root)
        self.uri = root
        self.fsync = fsync
        self._fs = filesystem
        if filesystem is not None:
            self.root = root.rstrip("/")
        elif "://" in root:
            self._fs, self.root = _filesystem(root)
        else:
            # A local root needs no pyarrow until the first I/O: the CLI starts hashing
            # while pyarrow (about 0.1 s of imports) loads in the writer thread.
            self.root = os.path.abspath(root)
        self._tmp_ready = False

    @property
    def fs(self):
        if self._fs is None:
            from pyarrow import fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

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
    def put(self, source: bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO,
            *, progress: Progress | None = None) -> str:
        """Store ``source`` (bytes, a file path or a readable binary stream); return its digest."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self.put_bytes(source)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise InvalidInputError(f"cannot put {path}: no such file (give the path of a readable file)")
            with open(path, "rb", buffering=0) as f:
                return self.put_stream(f, progress=progress)
        if hasattr(source, "readinto") or hasattr(source, "read"):
            return self.put_stream(source, progress=progress)
        raise InvalidInputError(f"cannot put a {type(source).__name__}: give bytes, a file path or a binary stream")

    def put_bytes(self, data: bytes | bytearray | memoryview) -> str:
        digest = PREFIX + hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            tmp = self._tmp_path()
            with self._open_tmp(tmp) as out:
                out.write(data)
            self._publish(tmp, digest)
        return digest

    def put_stream(self, stream: BinaryIO, *, progress: Progress | None = None) -> str:
        """Hash and copy ``stream`` in one pass.

        Three stages share a pool of buffers: a reader thread fills them, the calling
        thread hashes them, a writer thread copies them out. hashlib and file I/O
        release the GIL on large buffers, so on two cores the reads and writes overlap
        the hash and the wall time approaches the hash alone (measured in
        ``benchmarks/bench_store_put.py`` against ``openssl dgst``; reading in the
        hashing thread instead cost about 15 % more).
        """
        hasher = hashlib.sha256()
        tmp = self._tmp_path()
        free: queue.Queue[bytearray] = queue.Queue()
        to_hash: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        to_write: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        stop = threading.Event()
        failure: list[BaseException] = []
        opened: list = []

        def reader() -> None:
            allocated = 0
            readinto = getattr(stream, "readinto", None)
            try:
                while not stop.is_set():
                    if free.empty() and allocated < _BUFFERS:
                        buf, allocated = bytearray(CHUNK), allocated + 1
                    else:
                        try:
                            buf = free.get(timeout=0.1)
                        except queue.Empty:
                            continue
                    if readinto is not None:
                        n = readinto(buf)
                    else:
                        data = stream.read(CHUNK)
                        n = len(data)
                        buf[:n] = data
                    if not n:
                        break
                    to_hash.put((buf, n))
            except BaseException as exc:  # surfaced to the caller below
                failure.append(exc)
            finally:
                to_hash.put(None)

        def writer() -> None:
            try:
                # Opening here, not in the caller, lets the first reads and hashes run
                # while the filesystem layer is still being imported and set up.
                out = self._open_tmp(tmp)
                opened.append(out)
            except BaseException as exc:
                failure.append(exc)
                stop.set()
            while (item := to_write.get()) is not None:
                buf, n = item
                if not failure:
                    try:
                        out.write(memoryview(buf)[:n])
                    except BaseException as exc:
                        failure.append(exc)
                        stop.set()
                free.put(buf)

        threads = [threading.Thread(target=reader, name="blob-reader", daemon=True),
                   threading.Thread(target=writer, name="blob-writer", daemon=True)]
        for thread in threads:
            thread.start()
        drained = False
        try:
            while (item := to_hash.get()) is not None:
                buf, n = item
                hasher.update(memoryview(buf)[:n])
                to_write.put(item)
                if progress is not None:
                    progress(n)
            drained = True
        except BaseException:
            stop.set()
            raise
        finally:
            to_write.put(None)
            if not drained:
                while to_hash.get() is not None:  # let a blocked reader finish
                    pass
            for thread in threads:
                thread.join()
            for out in opened:
                out.close()
            if failure or stop.is_set():
                self._discard(tmp)
        if failure:
            raise failure[0]
        if self.fsync and self._local:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        digest = PREFIX + hasher.hexdigest()
        self._publish(tmp, digest)
        return digest

    def _open_tmp(self, tmp: str):
        if not self._tmp_ready:
            self.fs.create_dir(f"{self.root}/{_TMP}", recursive=True)
            self._tmp_ready = True
        return self.fs.open_output_stream(tmp)

    def _tmp_path(self) -> str:
        return f"{self.root}/{_TMP}/{uuid.uuid4().hex}.part"

    def _publish(self, tmp: str, digest: str) -> None:
        """Move a fully written temporary file into place, unless the blob already exists."""
        final = self.path(digest)
        if self.exists(digest):
            self._discard(tmp)
            return
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        # Rename is atomic on local disks; concurrent writers of the same digest race
        # harmlessly, since every one of them renames identical bytes.
        self.fs.move(tmp, final)

    def _discard(self, tmp: str) -> None:
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
        dest = Path(dest)
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
    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (temporary files excluded)."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            parent, _, name = info.path.rpartition("/")
            shard = parent.rpartition("/")[2]
            if len(name) == 64 and shard == name[:2] and all(c in "0123456789abcdef" for c in name):
                yield PREFIX + name

    def verify(self, digest: str) -> CorruptBlob | None:
        """Re-hash one blob; ``None`` when it is intact."""
        location = self.path(digest)
        hasher = hashlib.sha256()
        try:
            with self.fs.open_input_stream(location) as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return CorruptBlob(digest, location, "missing")
        actual = PREFIX + hasher.hexdigest()
        if actual != digest:
            return CorruptBlob(digest, location, f"content hashes to {actual}")
        return None

    def verify_all(self, *, progress: Progress | None = None) -> list[CorruptBlob]:
        """Re-hash every blob; return the corrupt ones."""
        bad = []
        for digest in self.digests():
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


def _corrupt_message(digest: str, location: str, actual: str) -> str:
    return (
        f"blob {digest} at {location} is corrupt: its content hashes to {actual}. "
        "Restore it from a replica or re-put the original; run 'factory store verify' to find others"
    )
