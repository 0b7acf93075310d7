"""Hostile and odd trees: links out, '..' names, FIFOs, empty files, tampered blobs."""

from __future__ import annotations

import os
import threading

import pytest

from factory.errors import CorruptBlobError, InvalidInputError
from factory.store._digest import canonical_json


def _nothing_stored(store) -> bool:
    blobs = store.blobs.root
    return not os.path.exists(blobs) or not any(files for _, _, files in os.walk(blobs))


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(1 << 20))
    (root / "sub" / "config.json").write_bytes(b'{"layers": 2}')
    return root


def test_a_link_to_etc_passwd_is_refused_with_nothing_written(store, src):
    """A tree holding a symlink to /etc/passwd is refused before any byte is stored."""
    (src / "sub" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInputError, match=r"sub/passwd .* is a link to /etc/passwd, outside the folder"):
        store.trees.put(src)
    assert _nothing_stored(store)


@pytest.mark.parametrize("target", ["../../outside.txt", "../src2", "sub"])
def test_links_that_leave_the_tree_or_name_a_folder_are_refused(store, src, target):
    """A relative link climbing out, or a link to a folder (a possible cycle), is refused; nothing is written."""
    (src.parent.parent / "outside.txt").write_bytes(b"secret")
    (src.parent / "src2").mkdir()
    (src / "link").symlink_to(target)
    with pytest.raises(InvalidInputError, match="link to"):
        store.trees.put(src)
    assert _nothing_stored(store)


def test_a_dangling_link_is_refused(store, src):
    """A link to nothing is named, not silently skipped."""
    (src / "gone").symlink_to("does-not-exist")
    with pytest.raises(InvalidInputError, match="does not exist"):
        store.trees.put(src)
    assert _nothing_stored(store)


def test_a_fifo_is_refused_without_hanging(store, src):
    """A FIFO inside the tree is refused at once (never opened, so nothing blocks), nothing written."""
    os.mkfifo(src / "sub" / "pipe")
    done = []
    worker = threading.Thread(target=lambda: done.append(pytest.raises(InvalidInputError, store.trees.put, src)))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "put hung on a FIFO"
    assert "sub/pipe" in str(done[0].value) and "a FIFO" in str(done[0].value)
    assert _nothing_stored(store)


def test_a_socket_is_refused(store, src):
    """A UNIX socket inside the tree is refused like any special file."""
    import socket

    sock = socket.socket(socket.AF_UNIX)
    path = src / "s.sock"
    try:
        sock.bind(str(path))
        with pytest.raises(InvalidInputError, match="a socket"):
            store.trees.put(src)
    finally:
        sock.close()
    assert _nothing_stored(store)


def test_a_name_that_is_not_utf8_is_refused(store, src):
    """A file name that cannot go into a JSON manifest is named, not mangled."""
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as f:
        f.write(b"x")
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        store.trees.put(src)
    assert _nothing_stored(store)


def test_a_zero_byte_file_is_stored_and_comes_back(store, src, tmp_path):
    """An empty file is a file: stored with size 0 and restored."""
    (src / "empty").write_bytes(b"")
    digest = store.trees.put(src).digest
    assert store.trees.manifest(digest).files["empty"].size == 0
    out = store.trees.get(digest, tmp_path / "out")
    assert (out / "empty").read_bytes() == b""


def _crafted_tree(store, paths: list[str]) -> str:
    """A manifest that factory would never write, stored as if it were a tree."""
    content = store.blobs.put(b"payload")
    files = {p: {"digest": content, "size": 7, "executable": False} for p in paths}
    return store.blobs.put(canonical_json({"format": "factory.tree/v1", "files": files}))


@pytest.mark.parametrize("bad", ["../escaped.txt", "a/../../escaped.txt", "/tmp/escaped.txt", "a//b", "./a"])
def test_get_refuses_a_manifest_naming_paths_outside_dest(store, tmp_path, bad):
    """A crafted manifest with '..' or an absolute path is refused before a byte is written anywhere."""
    digest = _crafted_tree(store, ["ok.txt", bad])
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(InvalidInputError, match="refused"):
        store.trees.get(digest, dest)
    assert not (tmp_path / "deep").exists()
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/escaped.txt")


def test_get_refuses_a_path_that_is_both_a_file_and_a_folder(store, tmp_path):
    """'a' as a file and 'a/b' as a file cannot both be written: refused up front."""
    digest = _crafted_tree(store, ["a", "a/b"])
    with pytest.raises(InvalidInputError, match="both as a file and as a folder"):
        store.trees.get(digest, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_flipped_byte_in_one_file_is_caught_on_get(store, src, tmp_path):
    """get verifies every file: one flipped byte fails the whole get, and DEST never appears."""
    digest = store.trees.put(src).digest
    blob = store.blobs.path(store.trees.manifest(digest).files["weights.bin"].digest)
    with open(blob, "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0x01]))
    dest = tmp_path / "dest"
    with pytest.raises(CorruptBlobError, match="corrupt") as info:
        store.trees.get(digest, dest)
    assert info.value.location == blob
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")] == []


def test_putting_the_tree_again_repairs_a_truncated_file(store, src, tmp_path):
    """After a blob of the tree is truncated, putting the same folder again repairs it."""
    digest = store.trees.put(src).digest
    blob = store.blobs.path(store.trees.manifest(digest).files["weights.bin"].digest)
    os.truncate(blob, 2)
    with pytest.raises(CorruptBlobError):
        store.trees.get(digest, tmp_path / "broken")
    assert store.trees.put(src).digest == digest
    out = store.trees.get(digest, tmp_path / "fixed")
    assert (out / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
