"""`factory tune`: a Ray Tune sweep with ASHA, every trial a Ray Train run, the best one packaged behind its contract.

The sweep runs through the CLI in a process of its own, on a head started with ``ray start --head``
(the session's ``ray_head``: it has the dashboard, and Ray Train inside Tune needs the State API).
Under `make test` the shared test cluster runs beside it (the other lane), so the machine has
several Ray instances, as a user's often has: ASHA's stopped trials must still free their
placement groups, or the later trials never start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from factory.contract import validate
from factory.settings import Settings
from factory.store import Store
from factory.train._synthetic import classification_table, mlp_config

EXE = os.path.join(os.path.dirname(sys.executable), "factory")

pytestmark = pytest.mark.own_cluster  # the session's `ray start --head`, not the shared cluster


def test_four_trials_with_asha_on_two_cpus_package_the_best(ray_head, tmp_path):
    """`factory tune` runs 4 trials on 2 CPUs, each finished or stopped by ASHA; the best by val_loss becomes a
    valid package traced to the dataset, code and environment, recorded as a sweep run with a child run per trial."""
    home = str(tmp_path / "home")
    store = Store(home, settings=Settings(home=home))
    version = store.datasets.add(classification_table(400, features=4, seed=7), name="toy", key=["id"])
    train = mlp_config(version.digest, features=4, epochs=3, seed=1,
                       hyperparameters={"lr": 0.01, "batch_size": 20},
                       compute={"workers": 1, "cpus_per_worker": 0.5})
    sweep = {"train": train.model_dump(mode="json"), "num_samples": 4, "max_concurrent_trials": 2,
             "space": {"hyperparameters.lr": {"loguniform": [0.001, 0.1]},
                       "architecture_config.hidden": {"choice": [[8], [16]]}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    # Nothing in the environment tells Ray's processes which cluster is theirs: `tune` must.
    res = subprocess.run([EXE, "tune", str(path), "--home", home, "--address", ray_head.address,
                          "--storage", str(tmp_path / "ray"), "--json"],
                         capture_output=True, text=True, env=ray_head.env, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout)

    trials = result["trials"]
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    best = min((t for t in trials if "val_loss" in t["metrics"]), key=lambda t: t["metrics"]["val_loss"])
    assert result["best_trial"] == best["trial_id"]
    packaged = result["best"]
    assert validate(packaged["model"], store=store).ok
    assert store.refs.get(packaged["candidate"]) == packaged["model"]
    config = store.artifacts.get(packaged["config"])
    assert config.metadata["hyperparameters"]["lr"] == best["params"]["hyperparameters.lr"]
    assert config.parents == (version.digest,)
    model = store.artifacts.get(packaged["model"])
    assert {version.digest, packaged["config"], packaged["code"], packaged["environment"]} <= set(model.parents)
    assert packaged["dataset"] == version.digest
    assert store.artifacts.get(packaged["code"]).kind == "code"
    assert store.artifacts.get(packaged["environment"]).kind == "environment"
    provenance = model.metadata["provenance"]
    assert (provenance["dataset"], provenance["code"], provenance["environment"]) == (
        version.digest, packaged["code"], packaged["environment"])

    sweep_run = store.runs.get(result["run"])
    assert sweep_run.kind == "tune" and sweep_run.state == "succeeded"
    assert sweep_run.outputs()["model"] == packaged["model"]
    trial_runs = {t["trial_id"]: store.runs.get(t["run"]) for t in trials}
    assert all(r.kind == "train" and sweep_run.digest in r.parents for r in trial_runs.values())
    assert all(r.state == "succeeded" for r in trial_runs.values())
    best_run = trial_runs[best["trial_id"]]
    assert {sweep_run.digest, best_run.digest} <= set(model.parents)
    for trial in trials:
        epochs = [m.value for m in trial_runs[trial["trial_id"]].metrics() if m.name == "epoch"]
        assert epochs == [float(e) for e in range(1, trial["epochs"] + 1)]
