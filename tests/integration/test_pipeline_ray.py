"""Pipelines through the controller actor on the shared Ray cluster: steps as Ray tasks, reuse
by digests, reruns downstream of a change, retries then failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipeline_kit
from factory.runtime import Pipeline, get_controller, run_pipeline

TESTS = str(Path(pipeline_kit.__file__).parent)
# Step tasks import the test kit: give their workers its folder (and this checkout's factory).
ENV = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(Path(TESTS).parent), TESTS])}}


@pytest.fixture
def controller(ray_cluster, store):
    """The store's controller actor, killed for good after the test."""
    import ray

    handle = get_controller(store)
    yield handle
    ray.kill(handle, no_restart=True)


def graph(calls: str, x: str, y: str) -> Pipeline:
    p = Pipeline("ray-graph", runtime_env=ENV)
    small = {"cpus": 0.1}
    a = p.user("a", "pipeline_kit:join", inputs={"x": x}, config={"calls": calls}, resources=small)
    b = p.user("b", "pipeline_kit:join", inputs={"y": y}, config={"calls": calls}, resources=small)
    p.user("c", "pipeline_kit:join", inputs={"a": a.output("blob"), "b": b.output("blob")}, config={"calls": calls},
           resources=small)
    return p


def test_rerun_reuses_and_a_changed_input_reruns_downstream_on_ray(controller, store, tmp_path):
    """On the cluster too: an unchanged rerun runs nothing; changing b's input reruns b and c only."""
    calls = str(tmp_path / "calls")
    x, y, y2 = (store.put_blob(v).digest for v in (b"x", b"y", b"y2"))
    first = run_pipeline(graph(calls, x, y), store=store, timeout_s=300)
    again = run_pipeline(graph(calls, x, y), store=store, timeout_s=300)
    changed = run_pipeline(graph(calls, x, y2), store=store, timeout_s=300)
    assert first.ran() == ["a", "b", "c"] and again.reused() == ["a", "b", "c"]
    assert changed.reused() == ["a"] and changed.ran() == ["b", "c"]
    assert [pipeline_kit.calls(calls, s) for s in "abc"] == [1, 2, 2]


def test_failing_step_retries_then_fails_the_run_and_nothing_downstream_runs(controller, store, tmp_path):
    """A step that keeps failing is tried 1 + retries times as Ray tasks, then the run fails with its
    error and the next step never runs."""
    calls = str(tmp_path / "calls")
    p = Pipeline("ray-broken", runtime_env=ENV)
    bad = p.user("bad", "pipeline_kit:fail", config={"calls": calls}, retries=1, retry_delay_s=0.1,
                 resources={"cpus": 0.1})
    p.user("after", "pipeline_kit:join", inputs={"bad": bad.output("blob")}, config={"calls": calls},
           resources={"cpus": 0.1})
    status = run_pipeline(p, store=store, timeout_s=300, check=False)
    assert status.state == "failed" and status.failed_step == "bad"
    assert "the step's code is broken" in status.error
    assert pipeline_kit.calls(calls, "bad") == 2 and pipeline_kit.calls(calls, "after") == 0
    assert status.step("after").state == "skipped"
