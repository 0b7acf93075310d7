"""A trained model from the CLI to production: deploy, answer a standard OIP client, roll a new one out, roll a bad
one back.

Two packages are trained on the shared Ray cluster (Ray Train, one small worker) from one
generated dataset with different seeds; everything after that goes through the ``factory``
CLI as a user types it: ``factory serve deploy``, ``factory rollout start`` (hosting the
rollout in the foreground while client threads put load on the model), ``factory rollout
status``. One Serve instance serves the whole module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from _servers import free_port
from prometheus_client.parser import text_string_to_metric_families
from serve_kit import Load, gate
from typer.testing import CliRunner

from factory.contract import load
from factory.runtime.cli import app
from factory.serve import read_state, version_of

ENV = "dev"
CONTROLLER = "factory-controller"
EXE = os.path.join(os.path.dirname(sys.executable), "factory")
runner = CliRunner()


def factory(home, *args: str):
    """``factory ARGS --home HOME`` as the controller's actor, in this process (it shares the test's Ray)."""
    return runner.invoke(app, [*args, "--home", str(home)], env={"FACTORY_ACTOR": CONTROLLER, "COLUMNS": "200"})


def status(home) -> dict:
    """``factory rollout status --json``: the live rollout, else the latest that ended."""
    res = factory(home, "rollout", "status", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    """Two packages of model 'toy' trained on one dataset (seed 1, 3 epochs then 4), both gated for dev."""
    from factory.settings import Settings
    from factory.store import Store
    from factory.train import train
    from factory.train._synthetic import classification_table, mlp_config

    root = tmp_path_factory.mktemp("trained")
    home = root / "home"
    store = Store(home, settings=Settings(home=str(home), catalog=str(home / "catalog.db"), actor=CONTROLLER))
    script = root / "train.py"
    script.write_text("# the training script\n")
    code = {"code_root": str(root), "entry": (str(script),)}
    data = store.datasets.add(classification_table(600, features=4, classes=3, seed=3), name="toy", key=["id"])
    digests = []
    for epochs in (3, 4):
        config = mlp_config(data.digest, features=4, epochs=epochs, seed=1,
                            architecture_config={"in_features": 4, "out_features": 3, "hidden": [8]},
                            compute={"workers": 1, "cpus_per_worker": 0.5})
        digest = train(config, store=store, **code).model
        gate(store, digest, ENV)
        digests.append(digest)
    return store, *digests


@pytest.fixture
def store(trained):
    """The trained packages' store (the ``faulty_package`` fixture packages into it too)."""
    return trained[0]


def test_a_trained_package_is_deployed_answers_tritonclient_then_a_new_one_is_promoted_and_a_bad_one_rolled_back(
        trained, serve_url, faulty_package, tmp_path):
    """The CLI serves a trained package to tritonclient with its in-process outputs; 'factory rollout start' takes
    the next one through shadow and canary steps to promoted; a candidate failing 30 % is rolled back on its own."""
    import tritonclient.http as triton

    store, first, second = trained
    home = store.home
    deployed = factory(home, "serve", "deploy", first[:19], "--env", ENV, "--json")
    assert deployed.exit_code == 0, deployed.output
    done = json.loads(deployed.stdout)
    assert done["url"] == f"{serve_url}/v2/models/toy" and done["version"] == version_of(first)

    client = triton.InferenceServerClient(url=serve_url.removeprefix("http://"))
    assert client.is_model_ready("toy") and client.get_model_metadata("toy")["versions"] == [version_of(first)]
    rows = np.random.default_rng(7).standard_normal((5, 4)).astype("float32")
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    reply = client.infer("toy", [tensor], request_id="trained-1")
    expected = load(store, first).predict({"features": rows})
    assert reply.get_response()["id"] == "trained-1"
    for name, value in expected.items():
        np.testing.assert_allclose(reply.as_numpy(name), np.asarray(value), rtol=1e-5, atol=1e-6)

    settings = tmp_path / "rollout.yaml"  # short windows, and a bound this shared machine can keep
    settings.write_text("min_compared: 15\np99_latency_ms: 5000\nmax_disagreement: 0.35\n")
    url = f"{serve_url}/v2/models/toy/infer"
    port = free_port()
    with Load(url):
        good = factory(home, "rollout", "start", second[:19], "--env", ENV, "--steps", "50,100", "--window", "2s",
                       "--min-requests", "15", "--config", str(settings), "--metrics-port", str(port))
    assert good.exit_code == 0, good.output
    scraped = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text) for s in family.samples}
    labels = (("env", ENV), ("model", "toy"))
    assert scraped[("factory_rollout_step", labels)] == -1  # ended
    assert scraped[("factory_rollout_outcomes_total", (*labels, ("outcome", "promoted")))] == 1
    assert scraped[("factory_rollout_analyses_total", (*labels, ("verdict", "pass")))] >= 3  # shadow, 50 %, 100 %
    assert scraped[("factory_rollout_weight_percent", (*labels, ("version", version_of(second))))] == 100
    final = status(home)
    assert final["outcome"] == "promoted" and final["candidate"] == second, final
    assert store.refs.get(f"model/toy/{ENV}") == second
    assert read_state(store, "toy").primary == second
    shown = factory(home, "rollout", "status")
    assert shown.exit_code == 0 and "promoted" in shown.output and version_of(second) in shown.output

    broken = faulty_package(name="toy", fail_rate=0.3, admit_to=ENV)
    with Load(url) as answers:
        bad = factory(home, "rollout", "start", broken.digest[:19], "--env", ENV, "--no-shadow", "--steps", "20,100",
                      "--window", "2s", "--min-requests", "15", "--config", str(settings))
    assert bad.exit_code == 1, bad.output
    final = status(home)
    assert final["outcome"] == "rolled-back" and final["candidate"] == broken.digest, final
    assert store.refs.get(f"model/toy/{ENV}") == second  # production never moved
    assert read_state(store, "toy").traffic().weights == {version_of(second): 100.0}
    errors = sum(1 for _, status, _ in answers.answers if status != 200)
    assert errors / len(answers.answers) <= 0.20  # users saw errors only within the canary's share


def test_a_package_its_environment_does_not_admit_is_refused_by_deploy_and_rollout_start(trained):
    """With only dev's attestations, 'factory serve deploy --env prod' and 'factory rollout start --env prod' exit 2
    with one line naming what prod lacks, before touching any cluster; nothing is served or begun."""
    store, first, second = trained
    store.refs.set("model/toy/prod", first, reason="tests: an incumbent in prod, set by hand")
    env = {**os.environ, "FACTORY_ACTOR": CONTROLLER, "RAY_ADDRESS": "127.0.0.1:9"}  # no cluster there
    for args in (("serve", "deploy", second[:19], "--env", "prod"), ("rollout", "start", second[:19], "--env", "prod")):
        res = subprocess.run([EXE, *args, "--home", str(store.home)], capture_output=True, text=True, env=env,
                             timeout=300)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and len(lines) == 1, (args, res.stderr)
        assert "not admitted to prod" in lines[0] and "fairness" in lines[0], lines[0]
    assert store.refs.get("model/toy/prod") == first
    assert not [r for r in store.runs.list(kind="rollout") if r.config.get("env") == "prod"]
