"""`ray job submit --working-dir . -- python examples/factory_cycle.py --quick` against a real `ray start --head`.

The one run of the whole cycle in the suite: the quick sizes with the faulty candidate, its
pipelines on the controller actor. The module checks what `factory demo` promises (promoted
and rolled back, attestations, the report's pictures, trace and metrics on the home) and
what the cluster shows (the job, the controller actor and the job's actors in the dashboard).

The head runs on loopback with its own temporary folder, ports and a bounded object store,
and is stopped by its own process group (never `ray stop`, which stops every Ray on the
machine). The client sets RAY_AUTH_MODE=token, as Ray 2.60 requires.
"""

from __future__ import annotations

import json
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
ENTRY = [sys.executable, "-m", "factory.runtime._entry"]
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


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --block` in its own session; its address and dashboard URL; killed by process group."""
    tmp_path = tmp_path_factory.mktemp("head")
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


@pytest.fixture(scope="module")
def cycle_job(ray_head, tmp_path_factory):
    """The quick cycle (the faulty candidate included) submitted as a job; its output, home and dashboard."""
    address, dashboard = ray_head
    home = tmp_path_factory.mktemp("job") / "home"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": dashboard, "COLUMNS": "200"}
    argv = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".",
            "--runtime-env-json", '{"excludes": [".factory", ".git", "*.lance"]}',
            "--", "python", "examples/factory_cycle.py", "--quick", "--home", str(home)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    return done.stdout + done.stderr, done.returncode, home, dashboard


def test_the_submitted_cycle_promotes_the_candidate_and_rolls_the_faulty_one_back(cycle_job):
    """The job promotes its candidate and rolls the faulty one back, logs six attestations per gate run, prints
    its timings and writes the report with its three pictures."""
    out, code, home, _ = cycle_job
    assert code == 0, out[-5000:]
    assert "CYCLE {'candidate': 'promoted', 'faulty candidate': 'rolled-back'}" in out, out[-5000:]
    assert "rollout            promoted" in out and "rollout            rolled-back" in out
    assert out.count("6 attestations logged") == 3, out[-5000:]  # the baseline, the candidate, the faulty one
    assert "one candidate from dataset version to 100 % production" in out
    assert (home / "report.html").read_text().count("<svg") == 3  # two rollouts' traffic, the lineage


def test_the_controller_the_job_and_its_actors_show_in_the_dashboard(cycle_job):
    """The Jobs API lists the job as succeeded; the State API shows the controller actor (namespace factory)
    beside the job's training and serving actors."""
    out, code, _, dashboard = cycle_job
    assert code == 0, out[-3000:]
    jobs = httpx.get(f"{dashboard}/api/jobs/", timeout=30, headers=_auth_header()).json()
    assert any(j.get("status") == "SUCCEEDED" and "factory_cycle.py" in j.get("entrypoint", "") for j in jobs), jobs
    for actor_class in ("ControllerActor", "TrainController", "ServeController"):
        found = _actors(dashboard, actor_class)
        assert found, (actor_class, found)
    controller = _actors(dashboard, "ControllerActor")[0]
    assert controller["ray_namespace"] == "factory" and controller["name"].startswith("factory-controller-")
    assert controller["state"] == "ALIVE"  # detached: it outlives the job that created it


def test_the_jobs_home_answers_trace_and_metrics(cycle_job):
    """A request the job's traffic sent traces back to its model and data; the metrics count the rollback."""
    from factory.settings import Settings
    from factory.store import Store
    from factory.store.features import FeatureLog

    out, code, home, _ = cycle_job
    assert code == 0, out[-3000:]
    store = Store(str(home), settings=Settings(home=str(home)))
    rid = FeatureLog(store, "inference-credit-risk").read().column("request_id")[0].as_py()
    traced = subprocess.run([*ENTRY, "trace", rid, "--json", "--home", str(home)], capture_output=True, text=True,
                            timeout=300)
    assert traced.returncode == 0, traced.stderr
    found = json.loads(traced.stdout)
    assert found["training_set"] and len(found["feature_views"]) == 2 and len(found["gates"]) == 6
    metrics = subprocess.run([*ENTRY, "metrics", "--json", "--home", str(home)], capture_output=True, text=True,
                             timeout=300)
    v = json.loads(metrics.stdout)
    assert v["in_production"] == 2 and v["rolled_back_after_gates"] == 1 and v["gated_rollouts"] == 2


def _actors(dashboard: str, actor_class: str) -> list[dict]:
    found = httpx.get(f"{dashboard}/api/v0/actors", timeout=60, headers=_auth_header(),
                      params={"filter_keys": "class_name", "filter_predicates": "=",
                              "filter_values": actor_class, "detail": "true"}).json()
    return found["data"]["result"]["result"]


def _auth_header() -> dict[str, str]:
    token = Path.home() / ".ray" / "auth_token"
    return {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
