"""``examples/train.py`` sent to a cluster with ``ray job submit``, as a user on a real cluster sends it.

The test starts a head node of its own (``ray start --head --block``: 2 CPUs, a small
object store, every port chosen free, its own temp dir and token), submits the example
with the repository as the working dir, and checks the store for the candidate package.
It stops the head by ending the ``ray start`` process it started; never ``ray stop``,
which would stop every Ray instance on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from factory.contract import validate
from factory.settings import Settings
from factory.store import Store

ROOT = Path(__file__).resolve().parents[2]
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


def _ray(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def _wait_for_jobs_api(dashboard: str, env: dict[str, str], head: subprocess.Popen, head_log: Path,
                       timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            log = Path(head_log)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"ray start exited with {head.returncode}:\n{tail}")
        if _ray("job", "list", "--address", dashboard, env=env, timeout=120).returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the jobs API at {dashboard} never answered")


def _stop(head: subprocess.Popen) -> None:
    """End the head we started: SIGTERM to ``ray start --block`` (it stops what it started), then its group."""
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=120)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    try:
        os.killpg(head.pid, signal.SIGKILL)  # the session it leads: only processes this test started
    except ProcessLookupError:
        pass


def test_the_example_trains_through_ray_job_submit(tmp_path):
    """`ray job submit --working-dir . -- python examples/train.py` trains and leaves a valid candidate package."""
    gcs, dashboard_port, client, agent, agent_grpc, runtime_env, metrics = _free_ports(7)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",          # `python` in the entrypoint is this venv's
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),  # Ray 2.60's jobs API wants a token
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1", RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="600",
    )
    # Ray's socket paths live under --temp-dir and must stay under 108 bytes: pytest's tmp_path is too deep.
    temp = tempfile.mkdtemp(prefix="rj-", dir="/tmp")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--metrics-export-port", str(metrics),
         "--min-worker-port", "0", "--max-worker-port", "0",
         "--dashboard-port", str(dashboard_port), "--ray-client-server-port", str(client),
         "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
         "--runtime-env-agent-port", str(runtime_env), "--num-cpus", "2", "--object-store-memory", str(200 * 2**20),
         "--temp-dir", temp, "--include-dashboard", "true", "--disable-usage-stats"],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    home = tmp_path / "home"
    try:
        _wait_for_jobs_api(dashboard, env, head, tmp_path / "head.log")
        job = _ray("job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
                   "python", "examples/train.py", "--home", str(home), "--rows", "600", "--epochs", "2",
                   "--workers", "2", "--cpus-per-worker", "0.25", env=env, timeout=1500)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "epoch 2/2" in job.stdout
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)

    store = Store(home, settings=Settings(home=str(home)))
    (candidate,) = store.refs.list("model/example-mlp/candidates/")
    model = candidate.target
    assert validate(model, store=store).ok
    (run,) = store.runs.list(kind="train")
    assert run.state == "succeeded" and run.outputs()["model"] == model
