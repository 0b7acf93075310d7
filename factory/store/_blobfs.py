"""Where blob bytes live: a local folder through ``os``, anything else through ``pyarrow.fs``.

``BlobStore`` talks to one of the two classes here and never to a filesystem API
directly. The local one needs no pyarrow (whose import costs about 0.1 s of a short
command) and is the only one that can write large blobs past the page cache: with
``O_DIRECT`` the bytes go from the writer's buffer to the disk, instead of being
copied into freshly allocated page-cache pages. On VMs whose memory the host backs
lazily, allocating those pages cost 1.5-4.5 s per GiB of kernel time (measured with
``benchmarks/bench_store_put.py`` on a 2-core AMD EPYC VM), three to six times the
cost of hashing the same bytes; a blob written once and read later gains nothing
from the cache either. Where a filesystem or a buffer does not allow direct I/O,
the write falls back to the page cache on its own.

Object stores (``ObjectFiles``) have no folders and no rename: uploads stream with a
bounded window and a blob is published by a size-checked server-side copy (see
``_fs.publish_object``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Protocol

from factory.store import _fs

if TYPE_CHECKING:
    from factory.settings import Settings

__all__ = ["ArrowFiles", "Files", "LocalFiles", "NotRegularFile", "ObjectFiles", "Sink", "DIRECT_ALIGN",
           "open_regular"]

# Direct I/O needs buffers, lengths and offsets aligned to the device's logical block;
# 4 KiB covers every common device, and page-aligned buffers (mmap) satisfy it.
DIRECT_ALIGN = 4096


class NotRegularFile(OSError):
    """Something other than a regular file (a folder, a link, a FIFO) where a file was expected."""


def open_regular(path: str | os.PathLike[str], *, follow_links: bool = True) -> BinaryIO:
    """Open a regular file for reading (unbuffered).

    Anything else (a folder, a FIFO, a device, or a link when ``follow_links`` is
    false) raises ``NotRegularFile`` at once: a FIFO is never waited on.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise NotRegularFile(exc.errno, "not a regular file", os.fspath(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        return open(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


class Sink(Protocol):
    def write(self, data: memoryview | bytes) -> None: ...

    def close(self) -> None: ...


class Files(Protocol):
    """The few file operations a blob store needs."""

    def stat(self, path: str) -> tuple[str, int | None]:
        """What stands at ``path`` (``file``, ``folder``, ``other`` or ``missing``; links are not
        followed) and, for a regular file, its size."""

    def open_read(self, path: str) -> BinaryIO: ...

    def open_write(self, path: str, *, direct: bool = False) -> Sink: ...

    def makedirs(self, path: str) -> None: ...

    def publish(self, tmp: str, final: str, size: int) -> None:
        """Put the fully written ``tmp`` at ``final`` in one step, replacing what stands there."""

    def delete(self, path: str) -> None: ...

    def sync(self, path: str) -> None: ...

    def list_files(self, root: str, *, recursive: bool) -> Iterator[tuple[str, float | None]]:
        """The regular files under ``root`` and their modification times."""

    def entries(self, root: str) -> Iterator[tuple[str, bool]]:
        """Every entry under ``root`` at any depth (folders too) and whether it is a regular file."""


class _DirectSink:
    """A new local file, written past the page cache while the buffers allow it.

    The first write that direct I/O refuses (an unaligned buffer or length, typically
    the last piece of a file) switches the file back to ordinary writes for the rest;
    a refused direct write transfers nothing, so it is simply repeated.
    """

    def __init__(self, path: str, *, direct: bool):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self.direct = direct and hasattr(os, "O_DIRECT")
        fd = None
        if self.direct:
            try:
                fd = os.open(path, flags | os.O_DIRECT, 0o666)
            except OSError as exc:  # a filesystem without direct I/O (tmpfs before Linux 6.6, some FUSE)
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False
        self.fd = fd if fd is not None else os.open(path, flags, 0o666)

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._buffered()
                continue
            view = view[n:]

    def _buffered(self) -> None:
        self.direct = False
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class LocalFiles:
    """A local folder, through ``os``."""

    def stat(self, path: str) -> tuple[str, int | None]:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return "missing", None
        if stat.S_ISREG(st.st_mode):
            return "file", st.st_size
        return ("folder" if stat.S_ISDIR(st.st_mode) else "other"), None

    def open_read(self, path: str) -> BinaryIO:
        """Open a blob; a link, FIFO or folder in its place raises ``NotRegularFile`` (never blocks)."""
        return open_regular(path, follow_links=False)

    def open_write(self, path: str, *, direct: bool = False) -> Sink:
        return _DirectSink(path, direct=direct)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def publish(self, tmp: str, final: str, size: int) -> None:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        # Atomic on one filesystem: readers see the old file or the new one. Concurrent
        # writers of one digest race harmlessly, since every one of them renames the same bytes.
        os.replace(tmp, final)

    def delete(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def sync(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def list_files(self, root: str, *, recursive: bool) -> Iterator[tuple[str, float | None]]:
        try:
            entries = list(os.scandir(root))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                yield entry.path, entry.stat(follow_symlinks=False).st_mtime
            elif recursive and entry.is_dir(follow_symlinks=False):
                yield from self.list_files(entry.path, recursive=True)

    def entries(self, root: str) -> Iterator[tuple[str, bool]]:
        try:
            found = list(os.scandir(root))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in found:
            # Links, FIFOs and folders are listed too (not followed): a blob's place may hold one.
            yield entry.path, entry.is_file(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                yield from self.entries(entry.path)


class _ArrowSink:
    def __init__(self, stream):
        self._stream = stream

    def write(self, data: memoryview | bytes) -> None:
        self._stream.write(data)

    def close(self) -> None:
        self._stream.close()


class ArrowFiles:
    """Any ``pyarrow.fs`` filesystem (S3, GCS, a ``file://`` URI)."""

    def __init__(self, fs):
        self.fs = fs

    def stat(self, path: str) -> tuple[str, int | None]:
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return "file", info.size
        if info.type == pafs.FileType.NotFound:
            return "missing", None
        return ("folder" if info.type == pafs.FileType.Directory else "other"), None

    def open_read(self, path: str) -> BinaryIO:
        """Open a blob; a folder in its place raises ``NotRegularFile``, nothing there ``FileNotFoundError``."""
        try:
            return self.fs.open_input_stream(path)
        except OSError:
            # Only a failed open pays for a second request: was it a folder (a prefix) or nothing?
            kind, _ = self.stat(path)
            if kind in ("folder", "other"):
                raise NotRegularFile(errno.EINVAL, "not a regular file", path) from None
            if kind == "missing":
                raise FileNotFoundError(errno.ENOENT, "no such file", path) from None
            raise

    def open_write(self, path: str, *, direct: bool = False) -> Sink:
        return _ArrowSink(self.fs.open_output_stream(path))

    def makedirs(self, path: str) -> None:
        self.fs.create_dir(path, recursive=True)

    def publish(self, tmp: str, final: str, size: int) -> None:
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        self.fs.move(tmp, final)

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass

    def sync(self, path: str) -> None:
        """Object stores make a write durable when it completes; nothing more to do."""

    def list_files(self, root: str, *, recursive: bool) -> Iterator[tuple[str, float | None]]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(root, recursive=recursive, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                yield info.path, info.mtime.timestamp() if info.mtime is not None else None

    def entries(self, root: str) -> Iterator[tuple[str, bool]]:
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            yield info.path, info.type == pafs.FileType.File


class ObjectFiles(ArrowFiles):
    """A bucket (S3, GCS): no folders to make, uploads with bounded memory, publishing by server-side copy."""

    def __init__(self, fs, settings: Settings):
        super().__init__(fs)
        self.settings = settings

    def open_write(self, path: str, *, direct: bool = False) -> Sink:
        return _fs.open_upload(self.fs, path)

    def makedirs(self, path: str) -> None:
        """Object stores have no folders: a key's prefix needs no making."""

    def publish(self, tmp: str, final: str, size: int) -> None:
        """A size-checked copy (see ``_fs.publish_object``); an object already at ``final`` is replaced whole."""
        _fs.publish_object(self.fs, tmp, final, size, self.settings)
