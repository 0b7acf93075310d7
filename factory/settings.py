"""Settings read from ``FACTORY_*`` environment variables, in this one place, on demand.

Nothing reads the environment at import time: callers build ``Settings.from_env()``
when they need it, and tests pass their own ``Settings`` or explicit arguments.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Settings"]

_TRUE = {"1", "true", "yes", "on"}


def os_actor() -> str:
    """This process's identity when FACTORY_ACTOR is not set: the OS user and the host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how it writes.

    ``home``: the store root, a local path or a ``pyarrow.fs`` URI (``s3://``, ``gs://``).
    ``catalog``: the SQLite file holding refs and the artifact index; defaults to
    ``<home>/catalog.db`` (a remote home needs it set, since SQLite wants a local disk). ``fsync``: flush each blob to disk before it
    becomes visible (slower; blobs are verified on read either way).
    ``actor``: who this process acts as, recorded with every ref move and run event and
    checked against protected refs (``FACTORY_ACTOR``, else ``user@host``).
    """

    home: str = ".factory"
    catalog: str | None = None
    fsync: bool = False
    actor: str = field(default_factory=os_actor)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            home=env.get("FACTORY_HOME", ".factory"),
            catalog=env.get("FACTORY_CATALOG") or None,
            fsync=env.get("FACTORY_FSYNC", "").strip().lower() in _TRUE,
            actor=env.get("FACTORY_ACTOR", "").strip() or os_actor(),
        )
