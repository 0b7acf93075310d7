"""``examples/train.py`` sent to a cluster with ``ray job submit``, as a user on a real cluster sends it.

The test submits the example to a head node started with ``ray start --head`` (the
session's ``ray_head``, see tests/_ray_head.py) with the repository as the working dir,
and checks the store for the candidate package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.contract import validate
from factory.settings import Settings
from factory.store import Store

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.own_cluster  # the session's `ray start --head`, not the shared cluster


def test_the_example_trains_through_ray_job_submit(ray_head, tmp_path):
    """`ray job submit --working-dir . -- python examples/train.py` trains and leaves a valid candidate package."""
    home = tmp_path / "home"
    job = ray_head.submit("--working-dir", str(ROOT), "--",
                          "python", "examples/train.py", "--home", str(home), "--rows", "600", "--epochs", "2",
                          "--workers", "2", "--cpus-per-worker", "0.25", timeout=1500)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    assert "epoch 2/2" in job.stdout

    store = Store(home, settings=Settings(home=str(home)))
    (candidate,) = store.refs.list("model/example-mlp/candidates/")
    model = candidate.target
    assert validate(model, store=store).ok
    (run,) = store.runs.list(kind="train")
    assert run.state == "succeeded" and run.outputs()["model"] == model
