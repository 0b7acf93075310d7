"""The controller actor killed mid-pipeline: Ray restarts it, it takes the run over from the store
and reaches the outcome an undisturbed run reaches, with no committed step run twice.

The same while it hosts a pipeline's rollout on a real Serve deployment under load: killed in a
canary stage, then again just after the promotion commits (stopped there by holding the SQLite
catalog's write lock), it resumes the rollout and promotes exactly once."""

from __future__ import annotations

import contextlib
import os
import sqlite3
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


def _until(predicate, what: str, timeout_s: float = 120.0, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
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


def _restarted(handle, pid: int) -> int:
    """Wait for Ray to restart the controller actor killed in process ``pid``; the new process's pid."""
    import ray

    # The kill is asynchronous: a call sent right after it may still reach the old process.
    return _until(lambda: (new := ray.get(handle.info.remote())["pid"]) != pid and new, "the controller to restart")


@contextlib.contextmanager
def _frozen_once(store, condition, what: str):
    """Hold the SQLite catalog's write lock from the first moment ``condition()`` holds: whoever made it
    hold is stopped at their next store write (readers go on: the catalog is in WAL mode). The lock is
    taken to look, so nothing is written between the look and the freeze."""
    db = sqlite3.connect(store.settings.catalog, isolation_level=None, timeout=0)

    def locked_when_true() -> bool:
        # No busy timeout: SQLite's own wait backs off up to 100 ms, so busy writers would keep it out.
        if not _try(db.execute, "BEGIN IMMEDIATE"):
            return False
        if condition():
            return True
        db.execute("ROLLBACK")
        return False

    try:
        _until(locked_when_true, what, 300, poll_s=0.002)
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def _try(call, *args) -> bool:
    try:
        call(*args)
    except sqlite3.OperationalError:
        return False
    return True


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _rollout_events(store, run_id: str) -> list[dict]:
    return [e.details for e in store.runs.get(run_id).events() if e.details.get("event")]


def test_controller_killed_mid_rollout_resumes_it_and_promotes_exactly_once(ray_cluster, store, mlp_package,
                                                                            serve_url):
    """Killing the controller in a canary, and again just after the promotion commits, loses nothing:
    the rollout resumes at its last passed stage, prod moves to the candidate once, the candidate alone
    serves, every request is answered, and the pipeline ends succeeded with its step recorded once."""
    import dataclasses

    import ray
    from serve_kit import Load, admit_as_dev

    from factory.runtime import CONTROLLER_ACTOR
    from factory.serve import RolloutConfig, deploy, read_state, replay, version_of
    from factory.store import Store

    as_controller = Store(store.home, settings=dataclasses.replace(store.settings, actor=CONTROLLER_ACTOR))
    incumbent = mlp_package(admit_to=None).digest
    candidate = mlp_package(max_batch_size=4, admit_to=None).digest  # the same weights, another package
    admit_as_dev(as_controller, "prod", incumbent, candidate)
    url = deploy(as_controller, incumbent, "prod", timeout_s=180).url + "/infer"
    config = RolloutConfig(steps=(50, 100), window_s=2.0, min_requests=10, min_compared=10, p99_latency_ms=5000.0)
    pipeline = Pipeline("ship")
    pipeline.step("ship", "rollout", inputs={"model": candidate},
                  config={"env": "prod", "rollout": config.model_dump(mode="json")})

    prod = "model/iris/prod"
    handle = get_controller(store)
    try:
        pids = [ray.get(handle.info.remote())["pid"]]
        with Load(url) as load:
            run_id = submit_pipeline(pipeline, store=store, request_id="ship-it")
            rollout = _until(lambda: store.runs.list(kind="rollout"), "the rollout to begin")[0].id
            _until(lambda: any(e["event"] == "stage" and e["stage"] == 1 for e in _rollout_events(store, rollout)),
                   "the rollout to pass its shadow stage")
            ray.kill(handle, no_restart=False)
            pids.append(_restarted(handle, pids[-1]))
            _until(lambda: any(e["event"] == "stage" and e["stage"] == 2 for e in _rollout_events(store, rollout)),
                   "the rollout's last stage", 300)
            # Then killed just after the promotion commits, stopped at its next store write, before the step
            # records anything: the next controller must find that promotion made, neither moving prod
            # again nor taking the ref's new target for a conflict.
            with _frozen_once(store, lambda: store.refs.get(prod) == candidate, "the promotion"):
                unrecorded = pipeline_status(store, run_id).step("ship").state == "running"
                ray.kill(handle, no_restart=False)
                _until(lambda: _gone(pids[-1]), "the controller's process to end")
            pids.append(_restarted(handle, pids[-1]))
            # A client retrying its submit after the crash gets the same run, not a conflict or a second run.
            assert submit_pipeline(pipeline, store=store, request_id="ship-it") == run_id
            status = wait_pipeline(store, run_id, timeout_s=300)
    finally:
        ray.kill(get_controller(store), no_restart=True)
    assert len(set(pids)) == 3  # restarted by Ray after each kill
    assert unrecorded  # the second kill came before the step recorded its outcome
    assert status.succeeded, status
    assert store.runs.get(status.step("ship").run).events()[-1].details["outcome"] == "promoted"
    # prod moved once: to the incumbent when deployed, then to the candidate by the controller.
    assert [(m.old, m.new) for m in store.refs.history(prod)] == [(None, incumbent), (incumbent, candidate)]
    (rollout_run,) = store.runs.list(kind="rollout")
    events = _rollout_events(store, rollout_run.id)
    recovered = [i for i, e in enumerate(events) if e["event"] == "recovered"]
    # Taken over, not begun again: after the first kill always; after the second only when the kill came
    # before the rollout recorded its end (the test sees prod move a few ms late under load, by which time
    # the end may be recorded: then the next controller reads the ended rollout and only its step resumes).
    assert len(recovered) in (1, 2) and [e["event"] for e in events].count("started") == 1
    before = replay(events[:recovered[0]])
    stages = config.stages()
    assert before.passed >= 0 and events[recovered[0]]["weight"] == stages[before.passed]
    assert [e["event"] for e in events].count("promoted") == 1 and rollout_run.state == "succeeded"
    state = read_state(as_controller, "iris")
    assert state.primary == candidate and state.traffic().weights == {version_of(candidate): 100.0}
    assert {s for _, s, _ in load.answers} == {200}  # no request lost through the kill and every traffic change
    step_runs = store.runs.list(kind="pipeline-step")
    assert [r.name for r in step_runs] == ["ship/ship"] and step_runs[0].state == "succeeded"
    assert len(store.runs.list(kind="pipeline")) == 1
