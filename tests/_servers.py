"""Throwaway servers for tests and benchmarks: an S3-compatible object store and a Prometheus on loopback.

``S3Server`` runs moto's standalone server (``moto[server]``) in a child process bound
to 127.0.0.1 on a free port, so nothing outside this machine can reach it and no two
runs collide. Used by tests/conftest.py (``s3_server``) and benchmarks/bench_s3_put.py.
``PrometheusServer`` runs Debian's ``prometheus`` (``make services`` installs it) the same
way, with a temporary config and storage, scraping the targets it is given.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from factory.settings import Settings

__all__ = ["S3Server", "PrometheusServer", "PROMETHEUS", "free_port"]


# moto's server, which also exits when the process that started it is gone (killed
# test runs leave no server behind).
_SERVE = """
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
"""


def _stop(process: subprocess.Popen, timeout_s: float) -> None:
    """End a server we started: politely, then not."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen, url: str, what: str, timeout_s: float) -> None:
    """Wait until ``url`` answers; a server that exits or stays silent is stopped and reported."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start with code {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                _stop(process, 10)
                raise RuntimeError(f"{what} did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """A running moto S3 server; ``stop()`` ends it. Build one with ``S3Server.start()``."""

    endpoint: str
    process: subprocess.Popen
    access_key: str = "testing"
    secret_key: str = field(default="testing", repr=False)
    region: str = "us-east-1"

    @classmethod
    def start(cls, *, timeout_s: float = 60.0) -> S3Server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
        )
        server = cls(endpoint=f"http://127.0.0.1:{port}", process=process)
        _wait_ready(process, f"{server.endpoint}/moto-api/", "moto's S3 server", timeout_s)
        return server

    def settings(self, home: str, **changes) -> Settings:
        """Settings for a store at ``home`` on this server (catalog and the rest from ``changes``)."""
        return Settings(home=home, s3_endpoint=self.endpoint, s3_region=self.region,
                        s3_access_key=self.access_key, s3_secret_key=self.secret_key, **changes)

    def env(self) -> dict[str, str]:
        """The environment a process (a CLI run, a Ray worker) needs to reach this server."""
        return {
            "FACTORY_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"factory-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        _stop(self.process, 10)


PROMETHEUS = "/usr/bin/prometheus"
_PROMETHEUS_CONFIG = """global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: factory
    scrape_interval: {interval}
    static_configs:
      - targets: [{targets}]
"""


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the test process dies (Linux), so no server outlives it."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class PrometheusServer:
    """A running Prometheus on loopback scraping ``targets``; ``stop()`` ends it."""

    url: str
    process: subprocess.Popen

    @classmethod
    def start(cls, targets: list[str], workdir: str, *, interval: str = "1s", timeout_s: float = 90.0,
              binary: str = PROMETHEUS) -> PrometheusServer:
        port = free_port()
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(_PROMETHEUS_CONFIG.format(interval=interval, targets=", ".join(f"'{t}'" for t in targets)))
        log = open(os.path.join(workdir, "prometheus.log"), "wb")
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(workdir, 'data')}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        server = cls(url=f"http://127.0.0.1:{port}", process=process)
        _wait_ready(process, f"{server.url}/-/ready", f"prometheus (log: {log.name})", timeout_s)
        return server

    def stop(self) -> None:
        _stop(self.process, 20)
