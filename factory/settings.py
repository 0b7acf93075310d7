"""Settings read from ``FACTORY_*`` environment variables, in this one place, on demand.

Nothing reads the environment at import time: callers build ``Settings.from_env()``
when they need it, and tests pass their own ``Settings`` or explicit arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from factory.errors import InvalidInputError

__all__ = ["Settings"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how it writes.

    ``home``: the store root, a local path or a ``pyarrow.fs`` URI (``s3://``, ``gs://``).
    ``catalog``: the SQLite file holding refs and the artifact index; defaults to
    ``<home>/catalog.db`` (a remote home needs it set, since SQLite wants a local disk). ``fsync``: flush each blob to disk before it
    becomes visible (slower; blobs are verified on read either way).
    ``serve_host``/``serve_port``: where Ray Serve's HTTP proxy listens when factory starts
    Serve (FACTORY_SERVE_HOST, FACTORY_SERVE_PORT). ``serve_max_body_bytes``: the largest
    inference request body a model server reads (FACTORY_SERVE_MAX_BODY_BYTES); larger
    ones get HTTP 413.
    """

    home: str = ".factory"
    catalog: str | None = None
    fsync: bool = False
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_max_body_bytes: int = 16 * 2**20

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            home=env.get("FACTORY_HOME", ".factory"),
            catalog=env.get("FACTORY_CATALOG") or None,
            fsync=env.get("FACTORY_FSYNC", "").strip().lower() in _TRUE,
            serve_host=env.get("FACTORY_SERVE_HOST") or "127.0.0.1",
            serve_port=_int(env, "FACTORY_SERVE_PORT", 8000),
            serve_max_body_bytes=_int(env, "FACTORY_SERVE_MAX_BODY_BYTES", 16 * 2**20),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidInputError(f"{name}={text!r} is not a positive integer: set it to a whole number, e.g. {default}")
    return value
