"""`ray job submit --working-dir . -- python examples/factory_cycle.py --quick` against a real `ray start --head`.

The one run of the whole cycle in the suite: the quick sizes with the faulty candidate, its
pipelines on the controller actor. The module checks what `factory demo` promises (promoted
and rolled back, attestations, the report's pictures, trace and metrics on the home) and
what the cluster shows (the job, the controller actor and the job's actors in the dashboard).

The head (tests/_ray_head.py) runs on loopback with its own temporary folder, ports and a
bounded object store, and is stopped by its own process group (never `ray stop`, which stops
every Ray on the machine). The client sets RAY_AUTH_MODE=token, as Ray 2.60 requires.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY = [sys.executable, "-m", "factory.runtime._entry"]

# A cluster of its own (a `ray start` head): under `make test` it runs beside the shared cluster's lane,
# not in it (tests/conftest.py), so its few minutes overlap the other Ray tests.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.own_cluster]


@pytest.fixture(scope="module")
def cycle_head(tmp_path_factory):
    """A head of its own (``_ray_head.RayHead``) with the 4 logical CPUs the demo's cluster declares (an idle replica
    reserves a whole CPU by its contract), Serve's proxies retrying requests of lost replicas."""
    from _ray_head import RayHead

    head = RayHead.start(tmp_path_factory.mktemp("head"), num_cpus=4, head_env={
        "PYTHONPATH": str(REPO), "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "factory.serve.proxy_middlewares"})
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def cycle_job(cycle_head, tmp_path_factory):
    """The quick cycle (the faulty candidate included) submitted as a job; its output, home and head."""
    home = tmp_path_factory.mktemp("job") / "home"
    done = cycle_head.submit("--working-dir", ".", "--runtime-env-json", '{"excludes": [".factory", ".git", "*.lance"]}',
                             "--", "python", "examples/factory_cycle.py", "--quick", "--home", str(home),
                             timeout=1500, cwd=REPO, env={"COLUMNS": "200"})
    return done.stdout + done.stderr, done.returncode, home, cycle_head


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
    out, code, _, head = cycle_job
    assert code == 0, out[-3000:]
    jobs = httpx.get(f"{head.dashboard}/api/jobs/", timeout=30, headers=head.auth()).json()
    assert any(j.get("status") == "SUCCEEDED" and "factory_cycle.py" in j.get("entrypoint", "") for j in jobs), jobs
    for actor_class in ("ControllerActor", "TrainController", "ServeController"):
        found = _actors(head, actor_class)
        assert found, (actor_class, found)
    controller = _actors(head, "ControllerActor")[0]
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


def _actors(head, actor_class: str) -> list[dict]:
    found = httpx.get(f"{head.dashboard}/api/v0/actors", timeout=60, headers=head.auth(),
                      params={"filter_keys": "class_name", "filter_predicates": "=",
                              "filter_values": actor_class, "detail": "true"}).json()
    return found["data"]["result"]["result"]
