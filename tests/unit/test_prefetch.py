"""The head start of `factory store put`: which command lines get one, and that it stays in step with the CLI."""

from __future__ import annotations

import pytest
import typer

from factory.runtime import _prefetch
from factory.runtime.cli import app


@pytest.fixture(autouse=True)
def no_head_start_left_over():
    """Each test ends with no head start running and the interpreter's switch interval as it was."""
    import sys

    before = sys.getswitchinterval()
    yield
    _prefetch.discard()
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    "argv, target",
    [
        (["store", "put", "f.bin"], ("f.bin", None)),
        (["-v", "store", "put", "f.bin", "--json"], ("f.bin", None)),
        (["store", "put", "--home", "/h", "f.bin"], ("f.bin", "/h")),
        (["store", "put", "f.bin", "--home=/h", "--name", "weights"], ("f.bin", "/h")),
        (["store", "put", "--name=--home", "f.bin"], ("f.bin", None)),
        (["store", "put", "--", "-odd-name.bin"], ("-odd-name.bin", None)),
        (["store", "put", "f.bin", "--help"], None),
        (["store", "put", "f.bin", "--bogus"], None),
        (["store", "put", "a.bin", "b.bin"], None),
        (["store", "put"], None),
        (["store", "put", "f.bin", "--home"], None),
        (["store", "get", "f.bin"], None),
        (["dataset", "add", "f.bin"], None),
        (["store", "put", "f.bin", "-v"], None),
    ],
)
def test_only_a_plain_put_of_one_file_gets_a_head_start(argv, target):
    """The scan recognises `store put FILE` with the put's own options and nothing else."""
    assert _prefetch.put_target(argv) == target


def test_the_scan_knows_exactly_the_options_of_the_command():
    """An option added to `store put` or `factory` must be taught to the scan, or this fails."""
    root = typer.main.get_command(app)
    put = root.commands["store"].commands["put"]
    options = [p for p in put.params if p.opts[0].startswith("-")]
    assert {o for p in options if p.is_flag for o in p.opts} == set(_prefetch.PUT_FLAGS)
    assert {o for p in options if not p.is_flag for o in p.opts} == set(_prefetch.PUT_VALUE_OPTIONS)
    assert {o for p in root.params for o in p.opts} == set(_prefetch.ROOT_FLAGS)
    assert [p.name for p in put.params if not p.opts[0].startswith("-")] == ["path"]


def test_a_head_start_for_another_file_or_store_is_dropped(tmp_path, monkeypatch):
    """take() hands over only what was started on the same file for the same store."""
    from factory.store import BlobStore

    monkeypatch.setattr(_prefetch, "MIN_BYTES", 0)
    big, other = tmp_path / "big.bin", tmp_path / "other.bin"
    big.write_bytes(b"x" * 100_000)
    other.write_bytes(b"y")
    home = tmp_path / "h"

    _prefetch.start(["store", "put", str(big), "--home", str(home)])
    assert _prefetch.take(other, BlobStore(home / "blobs")) is None
    _prefetch.start(["store", "put", str(big), "--home", str(home)])
    assert _prefetch.take(big, BlobStore(tmp_path / "elsewhere")) is None
    assert not list((home / "blobs" / "tmp").iterdir())

    _prefetch.start(["store", "put", str(big), "--home", str(home)])
    blobs = BlobStore(home / "blobs")
    staged = _prefetch.take(big, blobs)
    assert staged is not None
    digest = blobs.put(staged)
    assert blobs.get(digest) == b"x" * 100_000


def test_small_files_and_missing_files_get_no_head_start(tmp_path):
    """Below the size threshold, or for a path that is not a file, nothing starts."""
    small = tmp_path / "small.bin"
    small.write_bytes(b"z")
    for argv in (["store", "put", str(small)], ["store", "put", str(tmp_path / "missing")],
                 ["store", "put", str(tmp_path)]):
        _prefetch.start(argv + ["--home", str(tmp_path / "h")])
        assert _prefetch._started is None
    assert not (tmp_path / "h").exists()


def test_ctrl_c_while_the_stager_starts_leaves_it_registered_for_discard(tmp_path, monkeypatch):
    """A Ctrl-C that lands while the stager's thread starts: the head start is registered, and discard
    removes its temporary file (the console script exits without waiting for daemon threads)."""
    import os
    import signal
    import threading

    from factory.store import _staged

    monkeypatch.setattr(_prefetch, "MIN_BYTES", 0)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1_000_000)
    home = tmp_path / "h"
    real_start = threading.Thread.start

    def interrupted_start(thread):  # the signal arrives while the new thread starts
        real_start(thread)
        if thread.name != "blob-stager":
            return
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # Python acts on the signal at one of these waits, still inside start()
            threading.Event().wait(0.001)

    monkeypatch.setattr(_staged.threading.Thread, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        _prefetch.start(["store", "put", str(big), "--home", str(home)])
    monkeypatch.undo()
    assert isinstance(_prefetch._started, _staged.StagedBlob)
    _prefetch.discard()
    assert [p for p in home.rglob("*") if p.is_file()] == []


def test_ctrl_c_during_the_commit_returns_only_once_the_temporary_file_is_gone(tmp_path):
    """Interrupted while it waits for the stager, commit stops it and waits until its file is removed:
    the console script exits at once after, so a file left for later stays (CPython 3.11's Thread.join
    took a Ctrl-C as the thread's end, and .part files were left in the suite)."""
    import signal
    import threading
    import time

    from factory.store import BlobStore, HashingReader

    class Slow:
        """A stream of 100 x 1 MB that takes 0.1 s a read: the write runs 10 s unless stopped."""

        reads = 0

        def readinto(self, buffer) -> int:
            time.sleep(0.1)
            Slow.reads += 1
            if Slow.reads > 100:
                return 0
            n = min(len(buffer), 1 << 20)
            buffer[:n] = b"x" * n
            return n

    blobs = BlobStore(tmp_path / "blobs")
    staged = blobs.stage(HashingReader(Slow()))
    # To the main thread itself, as a terminal's Ctrl-C often lands: it breaks the wait in the middle.
    timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        staged.commit()
    timer.join()
    assert [p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []
