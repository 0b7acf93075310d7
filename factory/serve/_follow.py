"""A replica follows its deployment's state in the store, so changes need no restart.

A thread reads the state (two ref reads: ``deployment/<name>`` and the environment's
ref) every ``poll_s`` and applies it when it changed. A failed read or apply (the store
unreachable, a package that will not load or is not admitted) leaves the replica
serving what it served, logs once per distinct error, and is retried with backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Follower"]

log = logging.getLogger(__name__)


class Follower:
    """Calls ``apply(state)`` whenever ``read()`` returns a state whose ``key`` differs from the last applied."""

    def __init__(self, read: Callable[[], Any], apply: Callable[[Any], None], *, key: Hashable | None = None,
                 poll_s: float = 0.25, max_backoff_s: float = 10.0,
                 on_error: Callable[[str | None], None] | None = None):
        self._read = read
        self._apply = apply
        self.key = key
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.error: str | None = None
        self._on_error = on_error or (lambda error: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="factory-serve-follower", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def step(self) -> bool:
        """Read once and apply if changed; True when something was applied."""
        state = self._read()
        if state.key == self.key:
            return False
        self._apply(state)
        self.key = state.key
        return True

    def _loop(self) -> None:
        wait = self.poll_s
        while not self._stop.wait(wait):
            try:
                self.step()
            except Exception as exc:  # keep serving the last good state; try again later
                message = one_line(exc)
                if message != self.error:
                    log.error("cannot apply the deployment's new state (serving the previous one): %s", message)
                    self._on_error(message)
                self.error = message
                wait = min(max(wait * 2, self.poll_s), self.max_backoff_s)
            else:
                if self.error is not None:
                    self._on_error(None)
                self.error = None
                wait = self.poll_s


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line: a multi-line message (a list of problems) joined with '; '."""
    lines = (line.strip().removeprefix("- ") for line in str(exc).splitlines())
    return f"{type(exc).__name__}: " + "; ".join(line for line in lines if line)
