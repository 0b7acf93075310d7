"""The controller's scheduling logic with a fake clock, real store runs and no Ray: reuse by
digests, reruns downstream of a change, retries, failures, cancels and taking a run over."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

import pipeline_kit
from factory.errors import InvalidInputError, PipelineFailedError
from factory.runtime import Controller, Pipeline, pipeline_status, resolve
from factory.runtime._launch import _report
from factory.runtime._task import execute
from factory.store import Store


class FakeClock:
    """Seconds for the scheduler, datetimes for the store; moves only when told."""

    def __init__(self) -> None:
        self.t = 0.0
        self.base = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def __call__(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Inline:
    """Runs each attempt at once in the caller's thread, except the steps in ``hold`` (kept for the test)."""

    def __init__(self, store: Store, hold: tuple[str, ...] = ()):
        self.store = store
        self.hold = set(hold)
        self.held: dict[str, tuple] = {}
        self.cancelled: list[str] = []

    def launch(self, task, done):
        if task.step.name in self.hold:
            self.held[task.step.name] = (task, done)
            return task.step.name
        _report(lambda: execute(task, self.store), done)
        return task.step.name

    def cancel(self, handle):
        self.cancelled.append(handle)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cstore(store_settings, clock):
    """A store on the fake clock."""
    return Store(store_settings.home, settings=store_settings, clock=clock.now)


def controller(store, clock, **inline):
    launcher = Inline(store, **inline)
    ctl = Controller(store, launchers={"task": launcher}, clock=clock)
    ctl.start(loop=False)
    return ctl, launcher


def settle(ctl):
    while ctl.pump():
        pass


def graph(tmp_path, x: str, y: str, **steps):
    """a(x) and b(y) feed c; d runs after c."""
    calls = str(tmp_path / "calls")
    p = Pipeline("graph")
    a = p.user("a", "pipeline_kit:join", inputs={"x": x}, config={"calls": calls})
    b = p.user("b", "pipeline_kit:join", inputs={"y": y}, config={"calls": calls}, **steps.get("b", {}))
    c = p.user("c", "pipeline_kit:join", inputs={"a": a.output("blob"), "b": b.output("blob")}, config={"calls": calls})
    p.user("d", "pipeline_kit:join", inputs={"c": c.output("blob")}, config={"calls": calls})
    return p


def run(ctl, store, pipeline, request):
    run_id = ctl.submit(resolve(store, pipeline.spec()), request)
    settle(ctl)
    return pipeline_status(store, run_id)


def test_rerun_with_unchanged_inputs_reuses_every_step(cstore, clock, tmp_path):
    """Running the same pipeline on the same digests again runs nothing and says each step was reused."""
    ctl, _ = controller(cstore, clock)
    x, y = cstore.put_blob(b"x").digest, cstore.put_blob(b"y").digest
    first = run(ctl, cstore, graph(tmp_path, x, y), "one")
    second = run(ctl, cstore, graph(tmp_path, x, y), "two")
    assert first.succeeded and first.ran() == ["a", "b", "c", "d"]
    assert second.succeeded and second.reused() == ["a", "b", "c", "d"]
    assert second.outputs("d") == first.outputs("d")
    assert all(pipeline_kit.calls(tmp_path / "calls", s) == 1 for s in "abcd")


def test_one_changed_input_reruns_exactly_the_steps_downstream(cstore, clock, tmp_path):
    """Changing b's input reruns b, c and d, and reuses a."""
    ctl, _ = controller(cstore, clock)
    x, y, y2 = (cstore.put_blob(v).digest for v in (b"x", b"y", b"y2"))
    run(ctl, cstore, graph(tmp_path, x, y), "one")
    second = run(ctl, cstore, graph(tmp_path, x, y2), "two")
    assert second.reused() == ["a"] and second.ran() == ["b", "c", "d"]
    assert [pipeline_kit.calls(tmp_path / "calls", s) for s in "abcd"] == [1, 2, 2, 2]
    d_run = cstore.runs.get(second.step("d").run)
    assert cstore.artifacts.get(second.outputs("d")["blob"]).digest in d_run.outputs().values()


def test_outputs_have_the_step_run_and_inputs_as_lineage(cstore, clock, tmp_path):
    """A step's output traces back through its run to its input digests."""
    ctl, _ = controller(cstore, clock)
    x, y = cstore.put_blob(b"x").digest, cstore.put_blob(b"y").digest
    status = run(ctl, cstore, graph(tmp_path, x, y), "one")
    step_run = cstore.runs.get(status.step("a").run)
    assert x in step_run.parents
    ancestors = set(cstore.lineage.ancestors(status.outputs("a")["blob"]))
    assert {x, step_run.digest} <= ancestors


def test_same_request_id_is_one_run(cstore, clock, tmp_path):
    """Submitting twice with one request id (a retried command) gives the same run, not a second one."""
    ctl, _ = controller(cstore, clock)
    x, y = cstore.put_blob(b"x").digest, cstore.put_blob(b"y").digest
    plan = resolve(cstore, graph(tmp_path, x, y).spec())
    first = ctl.submit(plan, "same")
    settle(ctl)
    assert ctl.submit(plan, "same") == first
    assert len(cstore.runs.list(kind="pipeline")) == 1


def test_failing_step_retries_with_backoff_then_fails_the_run_and_nothing_downstream_runs(cstore, clock, tmp_path):
    """A broken step is tried 1 + retries times, waiting longer each time; then the run fails with its
    error, and the steps after it are skipped."""
    calls = str(tmp_path / "calls")
    p = Pipeline("broken")
    a = p.user("a", "pipeline_kit:make", config={"text": "a", "calls": calls})
    bad = p.user("bad", "pipeline_kit:fail", inputs={"a": a.output("blob")}, config={"calls": calls}, retries=2,
                 retry_delay_s=10)
    p.user("after", "pipeline_kit:join", inputs={"bad": bad.output("blob")}, config={"calls": calls})
    ctl, _ = controller(cstore, clock)
    run_id = ctl.submit(resolve(cstore, p.spec()), "r")
    settle(ctl)
    assert pipeline_kit.calls(calls, "bad") == 1 and pipeline_status(cstore, run_id).step("bad").state == "retrying"
    clock.advance(9.9)
    settle(ctl)
    assert pipeline_kit.calls(calls, "bad") == 1  # the first retry waits its 10 s
    clock.advance(0.2)
    settle(ctl)
    assert pipeline_kit.calls(calls, "bad") == 2
    clock.advance(19.9)
    settle(ctl)
    assert pipeline_kit.calls(calls, "bad") == 2  # the second waits twice as long
    clock.advance(0.2)
    settle(ctl)
    status = pipeline_status(cstore, run_id)
    assert pipeline_kit.calls(calls, "bad") == 3
    assert status.state == "failed" and status.failed_step == "bad"
    assert "RuntimeError: the step's code is broken" in status.error
    assert status.step("after").state == "skipped" and pipeline_kit.calls(calls, "after") == 0
    assert cstore.runs.get(status.step("bad").run).state == "failed"
    with pytest.raises(PipelineFailedError, match="failed at step 'bad'.*broken"):
        status.require()


def test_transient_failure_is_retried_to_success(cstore, clock, tmp_path):
    """A step that fails once and then works ends the run succeeded, on one step run."""
    calls = str(tmp_path / "calls")
    p = Pipeline("flaky")
    p.user("f", "pipeline_kit:flaky", config={"failures": 1, "calls": calls}, retries=1, retry_delay_s=1)
    ctl, _ = controller(cstore, clock)
    run_id = ctl.submit(resolve(cstore, p.spec()), "r")
    settle(ctl)
    clock.advance(1.5)
    settle(ctl)
    status = pipeline_status(cstore, run_id)
    assert status.succeeded and pipeline_kit.calls(calls, "f") == 2
    assert len(cstore.runs.list(kind="pipeline-step")) == 1


def test_bad_input_is_not_retried(cstore, clock, tmp_path):
    """A step that returns something that is not a digest fails at once: no retry fixes bad input."""
    p = Pipeline("bad-output")
    p.user("m", "pipeline_kit:make", config={"text": "x"}, retries=3)
    p.user("n", "pipeline_kit:bad_output", inputs={"m": "m.blob"}, retries=3)
    ctl, _ = controller(cstore, clock)
    run_id = ctl.submit(resolve(cstore, p.spec()), "r")
    settle(ctl)
    status = pipeline_status(cstore, run_id)
    assert status.state == "failed" and status.failed_step == "n" and "returned int" in status.error


def test_cancel_stops_running_steps_and_skips_the_rest(cstore, clock, tmp_path):
    """Cancelling a run cancels the step under way, skips those after it, and ends the run cancelled."""
    x, y = cstore.put_blob(b"x").digest, cstore.put_blob(b"y").digest
    ctl, launcher = controller(cstore, clock, hold=("b",))
    run_id = ctl.submit(resolve(cstore, graph(tmp_path, x, y).spec()), "r")
    settle(ctl)
    assert ctl.cancel(run_id, by="alice", reason="wrong data") == "cancelled"
    status = pipeline_status(cstore, run_id)
    assert launcher.cancelled == ["b"]
    assert [s.state for s in status.steps] == ["succeeded", "cancelled", "skipped", "skipped"]
    assert status.error == "wrong data"
    assert ctl.cancel(run_id, by="alice") == "cancelled"  # again: nothing changes


def test_a_new_controller_takes_over_and_no_committed_step_runs_twice(cstore, clock, tmp_path, monkeypatch):
    """A controller that died mid-pipeline is replaced: the next one finishes the run, reusing what
    committed and running only what was under way."""
    from factory.store import _owner
    from factory.store import runs as runs_module
    from factory.store.catalog import RunOwner

    x, y = cstore.put_blob(b"x").digest, cstore.put_blob(b"y").digest
    gone = RunOwner("a-host-that-died", 4242, 0.0)
    monkeypatch.setattr(runs_module, "current_owner", lambda: gone)
    first, launcher = controller(cstore, clock, hold=("b",))
    run_id = first.submit(resolve(cstore, graph(tmp_path, x, y).spec()), "r")
    settle(first)
    assert set(launcher.held) == {"b"}
    monkeypatch.setattr(runs_module, "current_owner", _owner.current_owner)
    clock.advance(cstore.runs.stale_after_s + 1)  # the dead host's heartbeats are old now
    assert cstore.runs.get(run_id).state == "interrupted"
    second, _ = controller(cstore, clock)  # start() takes the run over
    settle(second)
    status = pipeline_status(cstore, run_id)
    assert status.succeeded
    assert [pipeline_kit.calls(tmp_path / "calls", s) for s in "abcd"] == [1, 1, 1, 1]
    assert len(cstore.runs.list(kind="pipeline-step")) == 4
    assert second.submit(resolve(cstore, graph(tmp_path, x, y).spec()), "r") == run_id


def test_experiment_actor_may_not_submit_rollouts(cstore, clock, tmp_path):
    """A pipeline submitted from an experiment with a rollout step is refused before anything runs."""
    experiment = Store(cstore.home, settings=dataclasses.replace(cstore.settings, actor="experiment:churn"),
                       clock=clock.now)
    p = Pipeline("sneaky")
    p.step("ship", "rollout", inputs={"model": "ref:model/x/candidates/abc"})
    ctl, _ = controller(cstore, clock)
    plan = p.spec()
    from factory.runtime._plan import Plan, PlannedStep, factory_code_digest

    step = plan.steps[0]
    resolved = Plan(name="sneaky", submitted_by=experiment.settings.actor, steps=(PlannedStep(
        name=step.name, type=step.type, config=step.config, inputs={"model": "sha256:" + "1" * 64},
        code=factory_code_digest()),))
    with pytest.raises(InvalidInputError, match="experiment"):
        ctl.submit(resolved, "r")
    assert cstore.runs.list(kind="pipeline") == []


def test_ingest_then_sample_store_dataset_versions_with_lineage(cstore, clock, tmp_path):
    """A file ingested and sampled by built-in steps becomes two dataset versions, the sample's parent the
    ingested version, whose parent is the file; a rerun reuses both."""
    source = tmp_path / "customers.csv"
    source.write_text("id,spend\n" + "".join(f"{i},{i % 7}\n" for i in range(100)))
    p = Pipeline("data")
    raw = p.step("raw", "ingest", inputs={"source": source}, config={"dataset": "customers", "key": ["id"]})
    p.step("small", "sample", inputs={"dataset": raw.output("dataset")}, config={"rows": 10, "seed": 3})
    ctl, _ = controller(cstore, clock)
    status = run(ctl, cstore, p, "one")
    assert status.succeeded, status.error
    ingested = cstore.datasets.get(status.outputs("raw")["dataset"])
    sample = cstore.datasets.get(status.outputs("small")["dataset"])
    assert ingested.num_rows == 100 and sample.num_rows == 10 and sample.name == "customers-sample"
    assert ingested.digest in cstore.lineage.ancestors(sample.digest)
    assert run(ctl, cstore, p, "two").reused() == ["raw", "small"]


def test_cancelling_a_run_whose_controller_died_is_done_in_the_store(cstore, clock, tmp_path, monkeypatch):
    """A run nobody hosts any more can still be cancelled: its steps under way end cancelled, the rest skipped."""
    from factory.store import _owner
    from factory.store import runs as runs_module
    from factory.store.catalog import RunOwner

    x, y = cstore.put_blob(b"x").digest, cstore.put_blob(b"y").digest
    monkeypatch.setattr(runs_module, "current_owner", lambda: RunOwner("a-host-that-died", 4242, 0.0))
    first, _ = controller(cstore, clock, hold=("b",))
    run_id = first.submit(resolve(cstore, graph(tmp_path, x, y).spec()), "r")
    settle(first)
    monkeypatch.setattr(runs_module, "current_owner", _owner.current_owner)
    clock.advance(cstore.runs.stale_after_s + 1)
    bystander = Controller(cstore, clock=clock)  # not started: it hosts nothing
    assert bystander.cancel(run_id, by="alice", reason="stale") == "cancelled"
    status = pipeline_status(cstore, run_id)
    assert [s.state for s in status.steps] == ["succeeded", "cancelled", "skipped", "skipped"]
    assert cstore.runs.get(status.step("b").run).state == "cancelled"


def test_a_step_whose_record_cannot_be_written_fails_instead_of_hanging(cstore, clock):
    """A step leaving details that are not JSON fails with that reason; the run ends instead of waiting forever."""
    p = Pipeline("odd")
    p.user("odd", "pipeline_kit:odd_details", retries=2)
    ctl, _ = controller(cstore, clock)
    status = run(ctl, cstore, p, "r")
    assert status.state == "failed" and "JSON" in status.error and status.step("odd").attempt == 1
