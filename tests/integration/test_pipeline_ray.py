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


def test_every_client_finds_the_one_controller_and_cancel_goes_through_it(controller, store, tmp_path):
    """Two lookups give the same actor on the head node; cancelling a running pipeline through it stops the
    step and skips the rest."""
    import ray

    from factory.runtime import cancel_pipeline, controller_name, pipeline_status, submit_pipeline, wait_pipeline
    from factory.runtime._actor import CONTROLLER_NAMESPACE

    info = ray.get(controller.info.remote())
    assert ray.get(get_controller(store).info.remote())["pid"] == info["pid"]
    assert ray.get_actor(controller_name(store), namespace=CONTROLLER_NAMESPACE) is not None
    head = [n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"]]
    assert info["node"] in head
    calls = str(tmp_path / "calls")
    p = Pipeline("ray-slow", runtime_env=ENV)
    slow = p.user("slow", "pipeline_kit:make", config={"text": "s", "calls": calls, "sleep_s": 60},
                  resources={"cpus": 0.1})
    p.user("next", "pipeline_kit:join", inputs={"s": slow.output("blob")}, config={"calls": calls},
           resources={"cpus": 0.1})
    run_id = submit_pipeline(p, store=store)
    deadline = 120
    while pipeline_status(store, run_id).step("slow").state != "running" and deadline > 0:
        import time

        time.sleep(0.2)
        deadline -= 0.2
    assert cancel_pipeline(run_id, store=store, reason="not needed") == "cancelled"
    status = wait_pipeline(store, run_id, timeout_s=60)
    assert status.state == "cancelled" and status.error == "not needed"
    assert [s.state for s in status.steps] == ["cancelled", "skipped"]
    assert pipeline_kit.calls(calls, "next") == 0


def test_features_and_evaluate_steps_run_as_ray_tasks_through_the_controller(controller, store):
    """On the cluster: a point-in-time training set with its holdout, and the model's metrics on it, recorded."""
    from gates_kit import fair_package

    pipeline_kit.point_in_time_book(store)
    model = fair_package(store).digest
    status = run_pipeline(pipeline_kit.point_in_time_pipeline(model, runtime_env=ENV), store=store, timeout_s=300)
    assert status.ran() == ["features", "evaluate"]
    holdout = status.outputs("features")["holdout"]
    evaluation = store.artifacts.get(status.outputs("evaluate")["evaluation"])
    assert set(evaluation.parents) == {model, holdout} and evaluation.metadata["metrics"]["accuracy"] == 1.0
