"""``factory.track``: a plain script's params, metrics and outputs recorded on a run, by digest.

The run records themselves (``store.runs``) come from the store; until this branch has
them, a stand-in with the same interface (INTERFACES.md, "Runs") takes the calls, so
these tests pin what the tracker sends.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import factory
from factory.errors import FactorySystemError, InvalidInputError


class _Run:
    def __init__(self, kind, config, parents, name):
        self.id, self.digest = "r1", "sha256:" + "7" * 64
        self.kind, self.config, self.parents, self.name = kind, config, list(parents), name
        self.calls: list[tuple] = []
        self.state = "running"

    def event(self, state, **details):
        self.calls.append(("event", state, details))

    def log_metrics(self, step, metrics):
        self.calls.append(("metrics", step, dict(metrics)))

    def output(self, name, digest):
        self.calls.append(("output", name, digest))

    def finish(self, state="succeeded", **details):
        self.state = state
        self.calls.append(("finish", state, details))


class _Runs:
    def __init__(self):
        self.started: list[_Run] = []

    def start(self, kind, *, config, parents=(), key=None, name=None):
        run = _Run(kind, config, parents, name)
        self.started.append(run)
        return run


@pytest.fixture
def runs(store):
    store.runs = _Runs()
    return store.runs


def test_a_tracked_block_records_code_environment_inputs_metrics_and_outputs(store, runs, tmp_path):
    """Everything the script logs lands on one run whose parents are its code, environment and data."""
    version = store.datasets.add(pa.table({"id": np.arange(4), "x": np.ones(4)}), name="churn", key=["id"])
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights")
    with factory.track("churn-baseline", store=store, params={"lr": 0.1, "layers": (2, 3)},
                       inputs=["churn@1"], code_root=tmp_path) as run:
        run.log_params({"optimizer": object()})
        run.log_metrics({"loss": 0.5})
        run.log_metrics({"loss": 0.25, "auc": 0.9})
        run.log_metric("auc", 0.95, step=10)
        digest = run.log_output(model)
    started = runs.started[0]
    assert started.kind == "track" and started.name == "churn-baseline"
    assert started.config == {"params": {"lr": 0.1, "layers": [2, 3]}}
    assert set(started.parents) == {run.code, run.environment, version.digest}
    assert store.artifacts.get(run.code).kind == "code" and store.artifacts.get(run.environment).kind == "environment"
    assert store.blobs.get(digest) == b"weights"
    metrics = [c[1:] for c in started.calls if c[0] == "metrics"]
    assert metrics == [(0, {"loss": 0.5}), (1, {"loss": 0.25, "auc": 0.9}), (10, {"auc": 0.95})]
    assert ("output", "model.onnx", digest) in started.calls
    assert started.state == "succeeded" and started.calls[-1][2]["params"]["optimizer"].startswith("<object")


def test_a_failing_script_fails_its_run_and_keeps_its_exception(store, runs):
    """An exception inside the block marks the run failed and still reaches the caller."""
    with pytest.raises(ZeroDivisionError):
        with factory.track("broken", store=store):
            1 / 0
    assert runs.started[0].state == "failed"
    assert "ZeroDivisionError" in runs.started[0].calls[-1][2]["error"]


def test_bad_logging_is_refused(store, runs, tmp_path):
    """Logging outside the block, a non-number metric or a missing output is a clear user error."""
    tracker = factory.track("x", store=store)
    with pytest.raises(InvalidInputError, match="inside its block"):
        tracker.log_metrics({"loss": 1.0})
    with tracker as run:
        with pytest.raises(InvalidInputError, match="log numbers only"):
            run.log_metrics({"loss": "low"})
        with pytest.raises(InvalidInputError, match="no file or folder"):
            run.log_output(tmp_path / "absent.bin")
        with pytest.raises(InvalidInputError, match="neither a digest in the store, a file, nor a dataset"):
            run.log_input("no-such-dataset@3")


def test_a_store_without_run_records_says_so(store):
    """Tracking against a store that keeps no runs (one from before store.runs) fails at the start, naming it."""
    class OlderStore:
        home = store.home

    with pytest.raises(FactorySystemError, match=re.escape(f"the store at {store.home} keeps no run records")):
        with factory.track("x", store=OlderStore()):
            pass


def test_import_factory_stays_cheap():
    """`import factory` loads neither torch nor ray; `factory.track` is there on first use."""
    code = ("import sys, factory; print(sorted(m for m in ('torch','ray','lance','pydantic') if m in sys.modules)); "
            "print(callable(factory.track))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["[]", "True"]
