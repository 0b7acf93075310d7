"""`factory demo --quick` end to end on its own embedded Ray cluster, then trace and metrics on what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ENTRY = [sys.executable, "-m", "factory.runtime._entry"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quick demo in a subprocess (it starts and stops its own cluster), its output and home."""
    home = tmp_path_factory.mktemp("demo") / "demo"
    env = {**os.environ, "COLUMNS": "200", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([*ENTRY, "demo", "--quick", "--home", str(home)], capture_output=True, text=True,
                          env=env, timeout=1800)
    return done, home


def test_the_demo_promotes_a_candidate_and_rolls_the_faulty_one_back(demo_run):
    """The cycle completes: gates logged, the candidate promoted, the faulty one rolled back, timings printed."""
    done, home = demo_run
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-5000:]
    assert "rollout            promoted" in out and "rollout            rolled-back" in out
    assert "6 attestations logged" in out
    assert "one candidate from dataset version to 100 % production" in out
    assert (home / "report.html").exists() and (home / "report.html").read_text().count("<svg") == 3


def test_the_store_answers_trace_and_metrics_after_the_demo(demo_run):
    """A request the demo's traffic sent traces back to its model and data; the metrics count the rollback."""
    from factory.settings import Settings
    from factory.store import Store
    from factory.store.features import FeatureLog

    done, home = demo_run
    assert done.returncode == 0
    store_home = str(home / "store")
    store = Store(store_home, settings=Settings(home=store_home))
    rid = FeatureLog(store, "inference-credit-risk").read().column("request_id")[0].as_py()
    traced = subprocess.run([*ENTRY, "trace", rid, "--json", "--home", store_home], capture_output=True, text=True,
                            timeout=300)
    assert traced.returncode == 0, traced.stderr
    found = json.loads(traced.stdout)
    assert found["training_set"] and len(found["feature_views"]) == 2 and len(found["gates"]) == 6
    metrics = subprocess.run([*ENTRY, "metrics", "--json", "--home", store_home], capture_output=True, text=True,
                             timeout=300)
    v = json.loads(metrics.stdout)
    assert v["in_production"] == 2 and v["rolled_back_after_gates"] == 1 and v["gated_rollouts"] == 2
