"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary folder,
listen on 127.0.0.1 only (a free port) and on a unix socket inside that folder.

``PostgresServer.start()`` finds Debian's binaries (``initdb`` on PATH or under
``/usr/lib/postgresql/<version>/bin``); PostgreSQL refuses to run as root, so as root the
cluster is made and run by an unprivileged user (``postgres`` when it exists, else
``nobody``). A watchdog process stops the server and removes its folder if the process
that started it dies without calling ``stop()``, so a killed test run leaves nothing behind.
``create_database()`` gives each test a fresh database, copied from a template that holds
the catalog schema already (``CREATE DATABASE ... TEMPLATE``, a file copy).

Used by tests/conftest.py (``postgres_server``), tests/faults and benchmarks/bench_catalog.py.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresServer", "PostgresMissing", "postgres_bin", "serving"]

_SUPERUSER = "factory"
TEMPLATE = "factory_template"

# Stops the server and removes its folder once the process that started it is gone.
_WATCHDOG = """
import os, pwd, shutil, subprocess, sys, time
parent, pg_ctl, data, root, user = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    if not os.path.isdir(data):
        sys.exit(0)
    time.sleep(1)
kwargs = {}
if os.geteuid() == 0 and user:
    entry = pwd.getpwnam(user)
    kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, **kwargs)
shutil.rmtree(root, ignore_errors=True)
"""

_CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 300
shared_buffers = 32MB
log_min_messages = warning
logging_collector = off
"""
# Tests need no durability across a machine crash; a benchmark compares durable commits.
_NOT_DURABLE = """
fsync = off
full_page_writes = off
"""


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def postgres_bin() -> Path:
    """The folder holding initdb, pg_ctl and postgres; raises ``PostgresMissing`` with the fix."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresMissing(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: run `make services` "
        "(it runs `apt-get install -y postgresql`), or install them with your package manager"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user to run PostgreSQL as: None when this process is not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresMissing("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _as_user(user: str | None) -> dict:
    """subprocess arguments that run a tool as ``user`` (its own group, no supplementary groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """A running throwaway server; ``stop()`` ends it and removes its files."""

    root: Path
    port: int
    bin: Path
    user: str | None
    watchdog: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @classmethod
    def start(cls, *, durable: bool = False, timeout_s: float = 120.0) -> PostgresServer:
        """Make and start a server; ``durable`` keeps PostgreSQL's defaults (fsync at every commit)."""
        bin_dir = postgres_bin()
        user = _run_as()
        root = Path(tempfile.mkdtemp(prefix="factory-pg-"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = cls(root=root, port=_free_port(), bin=bin_dir, user=user)
        try:
            server._pg("initdb", "-D", str(server.data), "-U", _SUPERUSER, "--auth=trust", "-E", "UTF8",
                       "--locale=C", "--no-sync")
            with open(server.data / "postgresql.conf", "a") as conf:
                conf.write(_CONFIG.format(port=server.port, socket_dir=root) + ("" if durable else _NOT_DURABLE))
            server.watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(bin_dir / "pg_ctl"), str(server.data),
                 str(root), user or ""],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            server.pg_ctl("start", timeout_s=timeout_s)
            server._make_template()
        except BaseException:
            server.stop()
            raise
        return server

    def _pg(self, tool: str, *args: str, timeout_s: float = 120.0) -> str:
        kwargs = _as_user(self.user)
        proc = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, timeout=timeout_s,
                              cwd=self.root, **kwargs)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def pg_ctl(self, action: str, *, timeout_s: float = 120.0) -> None:
        """``start``, ``stop`` or ``restart`` the server (fast shutdown: sessions are ended, commits kept)."""
        # The server's output goes to a log file: a restarted server would otherwise hold our pipes open.
        args = ["-D", str(self.data), "-w", "-t", str(int(timeout_s)), "-l", str(self.root / "server.log")]
        if action != "start":
            args += ["-m", "fast"]
        self._pg("pg_ctl", *args, action, timeout_s=timeout_s + 10)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def _make_template(self) -> None:
        """A database holding the catalog schema at its latest version, to copy per test."""
        from factory.store._postgres import PostgresCatalog

        self.sql(f"CREATE DATABASE {TEMPLATE}")
        catalog = PostgresCatalog(self.url(TEMPLATE))
        catalog.migrate()
        catalog.close()

    def create_database(self, *, schema: bool = True) -> str:
        """A fresh database: with the catalog schema already in it, or empty (``schema=False``); its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE if schema else 'template0'}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        from factory.store._pgconn import forget_pools

        forget_pools(url)
        name = url.rsplit("/", 1)[1].split("?")[0]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.data.exists():
            try:
                kwargs = _as_user(self.user)
                subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                               capture_output=True, timeout=60, **kwargs)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait()


def serving() -> Iterator[PostgresServer]:
    """The body of a pytest fixture: a server, stopped afterwards; without PostgreSQL the test
    fails with the fix (it is never skipped)."""
    import pytest

    try:
        server = PostgresServer.start()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
