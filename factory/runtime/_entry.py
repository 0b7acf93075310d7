"""The ``factory`` console script: a head start for large puts, the CLI, a quick exit.

Kept apart from ``cli`` so that nothing heavy (typer, rich, pydantic) loads before
``_prefetch`` has started reading the file of ``factory store put``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Sequence

from factory.runtime import _prefetch

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``factory`` command line and exit with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _prefetch.start(args)
        from factory.runtime.cli import main as cli_main

        cli_main(args)
        rc = 0
    except SystemExit as exc:
        rc = _status(exc.code)
    except KeyboardInterrupt:  # Ctrl-C before typer was up: exit as typer would, 130
        rc = 130
    finally:
        _prefetch.discard()
    _exit(rc)


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def _exit(rc: int) -> None:
    """Exit without tearing the interpreter down, when nothing depends on the teardown.

    Finalizing the modules a verb loaded (pyarrow, pydantic, numpy) costs 60-70 ms
    here, a noticeable share of a short command. Exit handlers still run; only the
    module teardown is skipped. With Ray loaded (its core worker shuts down in
    finalizers) or a non-daemon thread still running, exit the normal way.
    """
    main_thread = threading.main_thread()
    busy = any(t.is_alive() and not t.daemon and t is not main_thread for t in threading.enumerate())
    if busy or "ray" in sys.modules:
        sys.exit(rc)
    atexit._run_exitfuncs()  # CPython's own exit path runs exactly this before teardown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nobody is reading any more
            pass
    os._exit(rc)


if __name__ == "__main__":
    main()
