"""`ray job submit --working-dir . -- python examples/factory_cycle.py` against a real `ray start --head`.

The head runs on loopback with its own temporary folder, ports and a bounded object store,
and is stopped by its own process group (never `ray stop`, which stops every Ray on the
machine). The client sets RAY_AUTH_MODE=token, as Ray 2.60 requires.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from factory.runtime._demo_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture
def ray_head(tmp_path):
    """`ray start --head --block` in its own session; its address and dashboard URL; killed by process group."""
    temp = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # Ray's socket paths must stay short
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    # The job's `python` is the one on the head's PATH: this interpreter's, as a cluster image's would be.
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "factory.serve.proxy_middlewares"}
    argv = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--num-cpus", "4", "--object-store-memory", str(256 * 2**20), "--temp-dir", str(temp),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--ray-client-server-port", str(free_port()), "--min-worker-port", "0", "--max-worker-port", "0",
            "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
    head = subprocess.Popen(argv, env=env, start_new_session=True, stdout=open(tmp_path / "head.log", "w"),
                            stderr=subprocess.STDOUT)
    try:
        _wait_for(f"http://127.0.0.1:{dashboard}/api/version", 240)
        yield address, f"http://127.0.0.1:{dashboard}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:  # a head that still serves takes half a minute to stop in order: its leftovers are killed below
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        time.sleep(2)
        with_leftovers = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
        for pid in with_leftovers:  # processes of this head only: their command line names its temp folder
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(temp, ignore_errors=True)


def test_the_cycle_runs_as_a_submitted_ray_job(ray_head, tmp_path):
    """The submitted job promotes its candidate, writes its report, and shows in the dashboard with its actors.

    It runs the cheapest whole path (``--smoke``: one trial, one canary step, no faulty
    candidate); ``test_demo`` covers the full cycle, the rollback included.
    """
    address, dashboard = ray_head
    home = tmp_path / "home"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": dashboard}
    argv = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".",
            "--runtime-env-json", '{"excludes": [".factory", ".git", "*.lance"]}',
            "--", "python", "examples/factory_cycle.py", "--smoke", "--home", str(home)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "CYCLE {'candidate': 'promoted'}" in out, out[-4000:]
    assert (home / "report.html").read_text().count("<svg") == 2, out[-4000:]  # the rollout's traffic, the lineage
    jobs = httpx.get(f"{dashboard}/api/jobs/", timeout=30, headers=_auth_header()).json()
    assert any(j.get("status") == "SUCCEEDED" and "factory_cycle.py" in j.get("entrypoint", "") for j in jobs), jobs
    for actor_class in ("TrainController", "ServeController"):  # the job's training and serving, in the State API
        found = httpx.get(f"{dashboard}/api/v0/actors", timeout=60, headers=_auth_header(),
                          params={"filter_keys": "class_name", "filter_predicates": "=",
                                  "filter_values": actor_class}).json()
        assert found["data"]["result"]["result"], (actor_class, found)


def _auth_header() -> dict[str, str]:
    token = Path.home() / ".ray" / "auth_token"
    return {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
