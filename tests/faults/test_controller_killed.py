"""The controller actor killed mid-pipeline: Ray restarts it, it takes the run over from the store
and reaches the outcome an undisturbed run reaches, with no committed step run twice."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pipeline_kit
from factory.runtime import Pipeline, get_controller, pipeline_status, submit_pipeline, wait_pipeline

TESTS = str(Path(pipeline_kit.__file__).parent)
ENV = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(Path(TESTS).parent), TESTS])}}


def _pipeline(calls: str, sleep_s: float) -> Pipeline:
    p = Pipeline("killed", runtime_env=ENV)
    small = {"cpus": 0.1}
    a = p.user("a", "pipeline_kit:make", config={"text": "a", "calls": calls}, resources=small)
    b = p.user("b", "pipeline_kit:join", inputs={"a": a.output("blob")}, config={"calls": calls, "sleep_s": sleep_s},
               resources=small)
    p.user("c", "pipeline_kit:join", inputs={"b": b.output("blob")}, config={"calls": calls}, resources=small)
    return p


def _until(predicate, what: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_controller_killed_mid_pipeline_resumes_to_the_same_outcome(ray_cluster, store, tmp_path):
    """Killing the controller while a step runs does not lose the run: it ends succeeded with the
    outputs an undisturbed run makes, each step recorded once, the committed step never rerun."""
    import ray

    calls = str(tmp_path / "calls")
    handle = get_controller(store)
    try:
        first_pid = ray.get(handle.info.remote())["pid"]
        run_id = submit_pipeline(_pipeline(calls, 3.0), store=store, request_id="kill-me")
        _until(lambda: pipeline_status(store, run_id).step("b").state == "running", "step b to run")
        ray.kill(handle, no_restart=False)
        # A client retrying its submit after the crash gets the same run, not a conflict or a second run.
        assert submit_pipeline(_pipeline(calls, 3.0), store=store, request_id="kill-me") == run_id
        status = wait_pipeline(store, run_id, timeout_s=300)
        assert ray.get(get_controller(store).info.remote())["pid"] != first_pid
    finally:
        ray.kill(get_controller(store), no_restart=True)
    assert status.succeeded, status
    assert pipeline_kit.calls(calls, "a") == 1 and pipeline_kit.calls(calls, "c") == 1
    step_runs = store.runs.list(kind="pipeline-step")
    assert sorted(r.name for r in step_runs) == ["killed/a", "killed/b", "killed/c"]
    assert all(r.state == "succeeded" for r in step_runs)
    assert len(store.runs.list(kind="pipeline")) == 1
    taken_over = [e for e in store.runs.get(run_id).events() if e.details.get("resumed")]
    assert len(taken_over) == 1  # the new controller took the run over, once
    assert any(e.details.get("resumed") for e in store.runs.get(status.step("b").run).events())
    assert store.blobs.get(status.outputs("c")["blob"]) == b"a"  # what an undisturbed run makes
