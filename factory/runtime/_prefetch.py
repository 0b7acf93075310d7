"""Start storing the file of ``factory store put`` before the CLI is up.

Loading typer, rich and pydantic and parsing the arguments takes about 0.25 s here,
a quarter of what hashing 1 GiB takes. The console script looks at the raw
arguments first; when they have the shape of ``factory store put FILE`` it starts
reading, hashing and writing that file into the store's temporary area, and the
``put`` verb commits it once typer has parsed the same arguments. Nothing becomes
visible before the verb commits, and a head start the verb does not take is removed,
so bad input still leaves nothing behind. Arguments the scan does not recognise
simply mean no head start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from factory.errors import FactoryError

if TYPE_CHECKING:
    from factory.store import BlobStore, HashingReader, StagedBlob

__all__ = ["PUT_FLAGS", "PUT_VALUE_OPTIONS", "ROOT_FLAGS", "discard", "put_target", "start", "take"]

# The options of `factory` and of `factory store put`, as the scan knows them; a unit
# test checks them against the typer command, so a new option cannot slip past.
ROOT_FLAGS = ("-v", "--verbose")
PUT_VALUE_OPTIONS = ("--name", "--home")
PUT_FLAGS = ("--json",)

# Below this a head start saves nothing worth three threads.
MIN_BYTES = 16 << 20

_started: HashingReader | StagedBlob | None = None
_switch_interval: float | None = None


def put_target(argv: Sequence[str]) -> tuple[str, str | None] | None:
    """``(FILE, HOME or None)`` of ``[ROOT_FLAGS] store put [OPTIONS] FILE``; None for anything else."""
    args = list(argv)
    while args and args[0] in ROOT_FLAGS:
        args.pop(0)
    if args[:2] != ["store", "put"]:
        return None
    positional: list[str] = []
    home = None
    rest = iter(args[2:])
    for arg in rest:
        option, eq, value = arg.partition("=")
        if arg == "--":
            positional.extend(rest)
        elif arg in PUT_VALUE_OPTIONS:
            value = next(rest, None)
            if value is None:
                return None
            home = value if arg == "--home" else home
        elif eq and option in PUT_VALUE_OPTIONS:
            home = value if option == "--home" else home
        elif arg in PUT_FLAGS:
            continue
        elif arg.startswith("-") and arg != "-":
            return None  # --help, a typo, an option added later: no head start
        else:
            positional.append(arg)
    return (positional[0], home) if len(positional) == 1 else None


def start(argv: Sequence[str]) -> None:
    """Start storing the target of ``argv`` if it is a ``store put`` of a large file.

    For a local store the bytes go straight to a temporary file in the store (a
    ``StagedBlob``), published only when the verb commits it; for a remote one the
    file is read and hashed ahead into the reader's bounded buffers.
    """
    global _started, _switch_interval
    target = put_target(argv)
    if target is None:
        return
    path, home = target
    try:
        if not os.path.isfile(path) or os.path.getsize(path) < MIN_BYTES:
            return
        from factory.store import HashingReader

        _started = reader = HashingReader.open(path)  # hashing starts now; the store loads meanwhile
    except OSError:
        return  # the verb reports a missing or unreadable file in its own words
    try:
        from factory.store import Store

        store = Store(home)  # the same store the verb opens: --home, else FACTORY_HOME
    except FactoryError:
        discard()
        return  # the verb reports a bad store in its own words
    if not store.remote:
        # Registered before its thread starts: a Ctrl-C landing in Thread.start (which waits for the
        # new thread) would otherwise leave a stager that discard() never hears of, writing a .part.
        _started = staged = store.blobs.stage(reader, start=False)
        staged.start()
        # Let the stager load the filesystem layer before this thread imports typer:
        # the imports take the GIL in turn anyway, and a Ctrl-C landing while two
        # threads import at once can leave CPython's module locks held, hanging the
        # other thread for good (seen in tests/faults: "Exception ignored in
        # _get_module_lock ... KeyboardInterrupt").
        _started.wait_opened(timeout=30)
    # Imports in this thread hold the GIL while the hasher waits for it between
    # buffers; a shorter switch interval hands it over sooner (measured 1.31 s ->
    # 1.19 s for a 1 GiB put on 2 cores). Restored by discard().
    if _switch_interval is None:
        _switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(_switch_interval, 0.001))


def take(path: str | os.PathLike[str], blobs: BlobStore) -> HashingReader | StagedBlob | None:
    """What was started on ``path`` for the store ``blobs``, if anything.

    The head start stays registered here until the process ends: ``discard`` then
    aborts it unless the verb committed it, so an interrupt anywhere between the two
    still leaves nothing behind.
    """
    started = _started
    if started is None:
        return None
    reader = getattr(started, "reader", started)  # a StagedBlob's reader, or the reader itself
    if reader.same_file(path) and (reader is started or started.blobs.root == blobs.root):
        return started
    discard()
    return None


def discard() -> None:
    """Abort a head start nobody committed (the verb failed or never ran); nothing stays."""
    global _started, _switch_interval
    started, _started = _started, None
    if started is not None:
        started.close()  # aborts unless the verb committed it
    if _switch_interval is not None:
        sys.setswitchinterval(_switch_interval)
        _switch_interval = None
