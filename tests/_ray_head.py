"""A Ray head node of the tests' own, started as a user starts one: ``ray start --head --block``.

2 CPUs, a small object store, the dashboard and its jobs API, every port chosen free,
its own temp dir and token (Ray 2.60's jobs API wants one). Started once for the session
by the ``ray_head`` fixture (tests/integration/conftest.py) and shared by the tests that
submit jobs to a real cluster; it is stopped by ending the ``ray start`` process it
started, never with ``ray stop``, which would stop every Ray instance on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Exited(AssertionError):
    """``ray start`` exited before its jobs API answered."""


@dataclass
class RayHead:
    """A running head: ``address`` (its GCS, for ``--address``), ``dashboard`` (the jobs API's URL) and ``env``
    (what a client process needs: its token, this venv's ``python`` first on PATH, no other cluster's address)."""

    address: str
    dashboard: str
    env: dict[str, str]
    process: subprocess.Popen
    temp: str
    log: Path

    @classmethod
    def start(cls, folder: Path, timeout: float = 600, *, num_cpus: int = 2,
              head_env: dict[str, str] | None = None) -> RayHead:
        """Start a head logging to ``folder/head.log`` and return once its jobs API answers.

        A loaded 2-core machine can make ``ray start`` miss its own node's registration
        (``Failed to get node info ... Deadline Exceeded``, exit 1): a head that exits while
        starting is tried once more, on new ports.
        """
        try:
            return cls._start(folder, timeout, num_cpus, head_env or {})
        except _Exited:
            return cls._start(folder, timeout, num_cpus, head_env or {})

    @classmethod
    def _start(cls, folder: Path, timeout: float, num_cpus: int, head_env: dict[str, str]) -> RayHead:
        gcs, dashboard_port, client, agent, agent_grpc, runtime_env, metrics = _free_ports(7)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",          # `python` in an entrypoint is this venv's
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
            RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1", RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="600",
        )
        env.update(head_env)
        # Ray's socket paths live under --temp-dir and must stay under 108 bytes: pytest's tmp_path is too deep.
        temp = tempfile.mkdtemp(prefix="rj-", dir="/tmp")
        log = folder / "head.log"
        process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
             "--dashboard-host", "127.0.0.1", "--metrics-export-port", str(metrics),
             "--min-worker-port", "0", "--max-worker-port", "0",
             "--dashboard-port", str(dashboard_port), "--ray-client-server-port", str(client),
             "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
             "--runtime-env-agent-port", str(runtime_env), "--num-cpus", str(num_cpus), "--object-store-memory", str(200 * 2**20),
             "--temp-dir", temp, "--include-dashboard", "true", "--disable-usage-stats"],
            stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        head = cls(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard_port}", env, process, temp, log)
        try:
            head._wait_for_jobs_api(timeout)
        except BaseException:
            head.stop()
            raise
        return head

    def _wait_for_jobs_api(self, timeout: float) -> None:
        """Poll the jobs API over HTTP (what ``ray job list`` asks, without starting a Python process each time)."""
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                raise _Exited(f"ray start exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    json.load(response)
                    return
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise AssertionError(f"the jobs API at {self.dashboard} never answered (last: {last})")

    def ray(self, *args: str, timeout: float, cwd: str | Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the ``ray`` CLI as a client of this head."""
        return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env={**self.env, **(env or {})},
                              timeout=timeout, cwd=cwd)

    def submit(self, *args: str, timeout: float, cwd: str | Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``ray job submit --address DASHBOARD ARGS``, waiting for the result. The jobs API answers before the
        head's job agent has registered; a submission in between is refused with "No available agent to
        submit job, please try again later" (seen under load): it is tried again, for up to a minute."""
        deadline = time.monotonic() + 60
        while True:
            done = self.ray("job", "submit", "--address", self.dashboard, *args, timeout=timeout, cwd=cwd, env=env)
            if done.returncode == 0 or "No available agent" not in done.stderr + done.stdout \
                    or time.monotonic() > deadline:
                return done
            time.sleep(1)

    def auth(self) -> dict[str, str]:
        """The header the dashboard's HTTP APIs need (token authentication)."""
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}

    def stop(self) -> None:
        """End the head: SIGTERM to ``ray start --block`` and its process group, SIGKILL to what is left after 3 s.

        A head that ran jobs takes 10 to 30 s to stop in order, for nothing the tests need: its
        state dies with it and its temp dir is removed. Its processes that left the group are
        found by the command line naming its own temp dir (no other Ray's is that).
        """
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):
            if self.process.returncode is not None:  # stopped already: its pid may be another process's by now
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        leftovers = subprocess.run(["pgrep", "-f", self.temp], capture_output=True, text=True).stdout.split()
        for pid in leftovers:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(self.temp, ignore_errors=True)
