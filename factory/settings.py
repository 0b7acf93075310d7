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

from factory.errors import InvalidInputError

__all__ = ["Settings", "default_keys_dir"]

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
    ``catalog``: where refs, runs and the artifact index live: the path of a SQLite file
    (default ``<home>/catalog.db``; SQLite wants a local disk) or a ``postgresql://`` URL
    (a catalog every node of a cluster shares). ``fsync``: flush each blob to disk before it
    becomes visible (slower; blobs are verified on read either way).
    ``actor``: who this process acts as, recorded with every ref move and run event and
    checked against protected refs (``FACTORY_ACTOR``, else ``user@host``).

    Object storage (``s3://`` homes): ``s3_endpoint`` is the server's URL for an
    S3-compatible store (MinIO, Ceph, moto), ``None`` for AWS itself;
    ``s3_region``, ``s3_access_key``, ``s3_secret_key`` and ``s3_session_token``
    default to the standard AWS variables, and left unset the AWS SDKs' own chain
    (profiles, instance roles, IRSA) provides them. ``s3_connect_timeout_s`` bounds
    how long an unreachable endpoint takes to fail.

    ``keys``: the local folder holding signing keys and the trusted public keys (``FACTORY_KEYS``; never object storage); ``None`` means
    ``default_keys_dir()``.

    ``serve_host``/``serve_port``: where Ray Serve's HTTP proxy listens when factory starts
    Serve (FACTORY_SERVE_HOST, FACTORY_SERVE_PORT). ``serve_max_body_bytes``: the largest
    inference request body a model server reads (FACTORY_SERVE_MAX_BODY_BYTES); larger
    ones get HTTP 413.
    """

    home: str = ".factory"
    catalog: str | None = None
    fsync: bool = False
    actor: str = field(default_factory=os_actor)
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_session_token: str | None = field(default=None, repr=False)
    s3_connect_timeout_s: float = 3.0
    keys: str | None = None
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
            actor=env.get("FACTORY_ACTOR", "").strip() or os_actor(),
            s3_endpoint=_first(env, "FACTORY_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            s3_region=_first(env, "FACTORY_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
            s3_access_key=_first(env, "AWS_ACCESS_KEY_ID"),
            s3_secret_key=_first(env, "AWS_SECRET_ACCESS_KEY"),
            s3_session_token=_first(env, "AWS_SESSION_TOKEN"),
            s3_connect_timeout_s=_seconds(env, "FACTORY_S3_CONNECT_TIMEOUT", 3.0),
            keys=env.get("FACTORY_KEYS") or default_keys_dir(env),
            serve_host=env.get("FACTORY_SERVE_HOST") or "127.0.0.1",
            serve_port=_int(env, "FACTORY_SERVE_PORT", 8000),
            serve_max_body_bytes=_int(env, "FACTORY_SERVE_MAX_BODY_BYTES", 16 * 2**20),
        )


def _first(env: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` set to something other than blanks."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise InvalidInputError(f"{name}={raw!r} is not a number of seconds: give one between 0 and 3600, e.g. 3")
    return value


def default_keys_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where signing keys live by default: ``$XDG_CONFIG_HOME/factory/keys``, else ``~/.config/factory/keys``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "factory", "keys")


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
