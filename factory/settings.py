"""Settings read from ``FACTORY_*`` environment variables, in this one place, on demand.

Nothing reads the environment at import time: callers build ``Settings.from_env()``
when they need it, and tests pass their own ``Settings`` or explicit arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Settings", "default_keys_dir"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how it writes.

    ``home``: the store root, a local path or a ``pyarrow.fs`` URI (``s3://``, ``gs://``).
    ``catalog``: the SQLite file holding refs and the artifact index; defaults to
    ``<home>/catalog.db`` (a remote home needs it set, since SQLite wants a local disk). ``fsync``: flush each blob to disk before it
    becomes visible (slower; blobs are verified on read either way). ``keys``: the local folder holding
    signing keys and the trusted public keys (``FACTORY_KEYS``; never object storage); ``None`` means
    ``default_keys_dir()``.
    """

    home: str = ".factory"
    catalog: str | None = None
    fsync: bool = False
    keys: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            home=env.get("FACTORY_HOME", ".factory"),
            catalog=env.get("FACTORY_CATALOG") or None,
            fsync=env.get("FACTORY_FSYNC", "").strip().lower() in _TRUE,
            keys=env.get("FACTORY_KEYS") or default_keys_dir(env),
        )


def default_keys_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where signing keys live by default: ``$XDG_CONFIG_HOME/factory/keys``, else ``~/.config/factory/keys``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "factory", "keys")
