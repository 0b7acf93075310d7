"""Who runs a run, and whether that process is still alive.

A run's owner is a process: its host, pid and start time. On the owner's own host the
process table answers (a pid reused by another process has another start time); from
any other host, an owner is alive while its heartbeat is fresh.
"""

from __future__ import annotations

import functools
import os
import socket
from datetime import datetime

from factory.store.catalog import RunOwner

__all__ = ["current_owner", "owner_alive"]

_START_TOLERANCE_S = 1.0  # start times are read at clock-tick resolution, twice


@functools.cache
def _owner_of(pid: int) -> RunOwner:
    import psutil

    return RunOwner(socket.gethostname(), pid, psutil.Process(pid).create_time())


def current_owner() -> RunOwner:
    """This process as a run owner (recomputed after a fork: the pid is part of the key)."""
    return _owner_of(os.getpid())


def owner_alive(owner: RunOwner, heartbeat_at: datetime, now: datetime, stale_after_s: float) -> bool:
    """Whether ``owner`` still runs: by the process table on its host, else by its heartbeat."""
    if owner.host != socket.gethostname():
        return (now - heartbeat_at).total_seconds() <= stale_after_s
    import psutil

    try:
        process = psutil.Process(owner.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - owner.started) < _START_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists; whose it is we cannot tell, so do not take it over
        return True
