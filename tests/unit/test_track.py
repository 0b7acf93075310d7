"""``factory.track``: a plain script's params, metrics and outputs recorded on a run in ``store.runs``, by digest."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import factory
from factory.errors import InvalidInputError


def _values(run, name):
    return [(m.step, m.value) for m in run.metrics() if m.name == name]


def test_a_tracked_block_records_code_environment_inputs_metrics_and_outputs(store, tmp_path):
    """Everything the script logs lands on one run whose parents are its code, environment and data."""
    version = store.datasets.add(pa.table({"id": np.arange(4), "x": np.ones(4)}), name="churn", key=["id"])
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights")
    with factory.track("churn-baseline", store=store, params={"lr": 0.1, "layers": (2, 3)},
                       inputs=["churn@1"], code_root=tmp_path) as tracker:
        tracker.log_params({"optimizer": object()})
        tracker.log_metrics({"loss": 0.5})
        tracker.log_metrics({"loss": 0.25, "auc": 0.9})
        tracker.log_metric("auc", 0.95, step=10)
        digest = tracker.log_output(model)
    run = store.runs.get(tracker.id)
    assert (run.kind, run.name, run.state) == ("track", "churn-baseline", "succeeded")
    assert run.config == {"lr": 0.1, "layers": [2, 3]}
    assert set(run.parents) == {tracker.code, tracker.environment, version.digest}
    assert store.artifacts.get(tracker.code).kind == "code"
    assert store.artifacts.get(tracker.environment).kind == "environment"
    assert _values(run, "loss") == [(0, 0.5), (1, 0.25)] and _values(run, "auc") == [(1, 0.9), (10, 0.95)]
    assert run.outputs() == {"model.onnx": digest} and store.blobs.get(digest) == b"weights"
    assert run.digest in store.lineage.parents(digest)
    last = run.events()[-1].details
    assert last["params"]["optimizer"].startswith("<object") and last["outputs"] == {"model.onnx": digest}


def test_a_folder_output_is_stored_as_a_tree(store, tmp_path):
    """A logged folder (a saved model directory) becomes one tree output whose files come back intact."""
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "data-0").write_bytes(b"\x00" * 1000)
    with factory.track("export", store=store, code_root=tmp_path) as tracker:
        digest = tracker.log_output(folder)
    assert store.artifacts.get(digest).kind == "tree"
    assert store.runs.get(tracker.id).outputs() == {"saved": digest}
    copy = store.trees.get(digest, tmp_path / "copy")
    assert (copy / "variables" / "data-0").read_bytes() == b"\x00" * 1000


def test_a_file_read_from_outside_the_store_is_an_external_parent(store, tmp_path):
    """An input file is recorded where it is (URI, size, SHA-256), not copied, and is a parent of the run."""
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    with factory.track("from-csv", store=store, inputs=[data], code_root=tmp_path) as tracker:
        later = tmp_path / "extra.csv"
        later.write_text("c\n3\n")
        extra = tracker.log_input(later)
    run = store.runs.get(tracker.id)
    (external,) = [p for p in run.parents if store.artifacts.get(p).kind == "external"]
    meta = store.artifacts.get(external).metadata
    assert meta["uri"].endswith(str(data)) and meta["size"] == data.stat().st_size and "blob" not in meta
    assert store.artifacts.get(extra).kind == "external"
    assert any(e.details.get("input") == extra for e in run.events())


def test_a_failing_script_fails_its_run_and_keeps_its_exception(store, tmp_path):
    """An exception inside the block marks the run failed and still reaches the caller; Ctrl-C cancels it."""
    with pytest.raises(ZeroDivisionError):
        with factory.track("broken", store=store, code_root=tmp_path) as tracker:
            1 / 0
    run = store.runs.get(tracker.id)
    assert run.state == "failed" and "ZeroDivisionError" in run.events()[-1].details["error"]
    with pytest.raises(KeyboardInterrupt):
        with factory.track("stopped", store=store, code_root=tmp_path) as tracker:
            raise KeyboardInterrupt
    assert store.runs.get(tracker.id).state == "cancelled"


def test_bad_logging_is_refused(store, tmp_path):
    """Logging outside the block, a non-number metric, a missing output or an unknown input is a clear user error."""
    tracker = factory.track("x", store=store, code_root=tmp_path)
    with pytest.raises(InvalidInputError, match="inside its block"):
        tracker.log_metrics({"loss": 1.0})
    with tracker as run:
        with pytest.raises(InvalidInputError, match="log numbers only"):
            run.log_metrics({"loss": "low"})
        with pytest.raises(InvalidInputError, match="no file or folder"):
            run.log_output(tmp_path / "absent.bin")
        with pytest.raises(InvalidInputError, match="neither a digest in the store, a file, nor a dataset"):
            run.log_input("no-such-dataset@3")
        with pytest.raises(InvalidInputError, match="is a folder"):
            run.log_input(tmp_path)
    with pytest.raises(InvalidInputError, match="not in the store"):
        with factory.track("y", store=store, inputs=["sha256:" + "0" * 64], code_root=tmp_path):
            pass


def test_import_factory_stays_cheap():
    """`import factory` loads neither torch nor ray; `factory.track` is there on first use."""
    code = ("import sys, factory; print(sorted(m for m in ('torch','ray','lance','pydantic') if m in sys.modules)); "
            "print(callable(factory.track))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["[]", "True"]
