"""Runs: started, followed, finished, found again by key, and read as interrupted when their owner is gone."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from factory.errors import InvalidInputError, NotFoundError, RunInProgressError
from factory.settings import Settings
from factory.store import Store
from factory.store.catalog import RunOwner, RunRecord

pytestmark = pytest.mark.catalogs


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def runs_store(store_settings, clock):
    return Store(settings=replace(store_settings, actor="trainer@test"), clock=clock)


def test_a_run_records_config_inputs_events_metrics_and_outputs(runs_store):
    """A finished run shows what it was given, what happened, what it measured and what it made."""
    store = runs_store
    data = store.put_blob(b"rows", name="rows.csv").digest
    run = store.runs.start("training", config={"lr": 0.1, "epochs": 2}, parents=[data], name="fraud")
    assert run.state == "running" and not run.reused and not run.resumed
    assert store.refs.get(f"run/{run.id}") == run.digest
    assert store.artifacts.get(run.digest).kind == "run" and run.parents == (data,)
    assert run.config == {"lr": 0.1, "epochs": 2}
    run.log_metrics(0, {"loss": 0.9})
    run.log_metrics(1, {"loss": 0.4, "auc": 0.81})
    ckpt = store.blobs.put(b"weights after epoch 2")
    out = run.output("checkpoint", ckpt)
    assert run.digest in out.parents and run.digest in store.lineage.parents(ckpt)
    assert data in store.lineage.ancestors(ckpt)
    run.finish(auc=0.81)
    again = store.runs.get(run.id)
    assert again.state == "succeeded" and again.outputs() == {"checkpoint": ckpt}
    assert [(m.step, m.name, m.value) for m in again.metrics()] == [(0, "loss", 0.9), (1, "auc", 0.81), (1, "loss", 0.4)]
    events = again.events()
    assert [(e.state, e.actor) for e in events] == [("running", "trainer@test"), ("succeeded", "trainer@test")]
    assert events[-1].details == {"auc": 0.81}


def test_a_succeeded_key_is_reused_and_a_running_one_refused(runs_store):
    """Starting work already done returns the finished run; starting it while it runs is an error naming it."""
    store = runs_store
    first = store.runs.start("gate-run", config={"policy": "quality"}, key="k1")
    with pytest.raises(RunInProgressError, match=rf"run {first.id} .*still running, owned by pid") as info:
        store.runs.start("gate-run", config={"policy": "quality"}, key="k1")
    assert info.value.run_id == first.id
    first.finish()
    again = store.runs.start("gate-run", config={"policy": "quality"}, key="k1")
    assert again.reused and again.id == first.id and again.state == "succeeded"
    assert len(store.runs.list(key="k1")) == 1


def test_a_failed_key_starts_a_new_run(runs_store):
    """A failed run does not block its key: starting it again is a fresh attempt, and both are listed."""
    store = runs_store
    first = store.runs.start("training", config={}, key="k2")
    first.finish("failed", error="out of memory")
    second = store.runs.start("training", config={}, key="k2")
    assert second.id != first.id and not second.reused
    assert [r.state for r in store.runs.list(key="k2")] == ["failed", "running"]


def _start_and_exit(settings: Settings, key: str) -> str:
    """Start a run in another process that exits without finishing it; the run's id."""
    code = (
        "from factory.store import Store; from factory.settings import Settings;"
        f"s = Store(settings=Settings(home={settings.home!r}, catalog={settings.catalog!r}));"
        f"r = s.runs.start('training', config={{'lr': 1}}, key={key!r});"
        "r.output('step-1', s.blobs.put(b'step one'));"
        "print(r.id)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_a_run_whose_process_is_gone_reads_interrupted_and_is_resumed_by_key(runs_store):
    """A crashed owner leaves an interrupted run; starting its key again takes it over with its outputs."""
    store = runs_store
    run_id = _start_and_exit(store.settings, "k3")
    run = store.runs.get(run_id)
    assert run.state == "interrupted" and set(run.outputs()) == {"step-1"}
    assert [r.id for r in store.runs.list(state="interrupted")] == [run_id]
    assert store.runs.list(state="running") == []
    resumed = store.runs.start("training", config={"lr": 1}, key="k3")
    assert resumed.resumed and resumed.id == run_id and resumed.state == "running"
    assert resumed.events()[-1].details["previous_state"] == "running"
    resumed.finish()
    assert store.runs.get(run_id).state == "succeeded"


def test_an_owner_on_another_host_is_gone_once_its_heartbeat_is_stale(runs_store, clock):
    """From another host only the heartbeat tells: fresh reads running, stale reads interrupted."""
    store = runs_store
    art, entry = store.artifacts.prepare("run", metadata={"run_id": "training-remote"}, name="training-remote")
    at = store.runs.now()
    record = RunRecord("training-remote", "training", "k4", None, art.digest, "running",
                       RunOwner("another-host", 4242, 1.0), at, at, at)
    store.catalog.start_run(record, entry, [], actor="them@another-host", details={})
    assert store.runs.get("training-remote").state == "running"
    clock.now += timedelta(seconds=store.runs.stale_after_s + 1)
    assert store.runs.get("training-remote").state == "interrupted"
    assert store.runs.start("training", config={}, key="k4").resumed


def test_only_the_owner_writes_and_never_after_the_end(runs_store):
    """A handle from a process that does not own the run cannot change it; a finished run stays finished."""
    store = runs_store
    run = store.runs.start("training", config={})
    run.finish()
    with pytest.raises(InvalidInputError, match="already finished as succeeded"):
        run.event("running")
    with pytest.raises(InvalidInputError, match="not a terminal run state"):
        store.runs.start("training", config={}).finish("running")
    with pytest.raises(InvalidInputError, match="'interrupted' is not a run state"):
        store.runs.start("training", config={}).event("interrupted")


def test_outputs_are_kept_as_recorded(runs_store):
    """An output name holds one digest; unknown digests are refused before anything is written."""
    store = runs_store
    run = store.runs.start("training", config={})
    a, b = store.blobs.put(b"a"), store.blobs.put(b"b")
    run.output("model", a)
    run.output("model", a)
    with pytest.raises(InvalidInputError, match="already has output 'model'"):
        run.output("model", b)
    with pytest.raises(NotFoundError, match="not in the store"):
        run.output("other", "sha256:" + "0" * 64)
    assert run.outputs() == {"model": a}


def test_metrics_keep_nan_and_refuse_non_numbers(runs_store):
    """A diverged loss is recorded as NaN; a string metric is a clear error."""
    run = runs_store.runs.start("training", config={})
    run.log_metrics(3, {"loss": float("nan")})
    assert math.isnan(run.metrics()[0].value)
    with pytest.raises(InvalidInputError, match="is not a number"):
        run.log_metrics(4, {"loss": "low"})
    with pytest.raises(InvalidInputError, match="not a step"):
        run.log_metrics(-1, {"loss": 1.0})


def test_list_filters_and_event_feed_follow_the_clock(runs_store, clock):
    """Runs are found by kind, state, start time and key; events are read on from a sequence number."""
    store = runs_store
    early = store.runs.start("training", config={"n": 1})
    clock.now += timedelta(hours=1)
    late = store.runs.start("gate-run", config={"n": 2}, key="g")
    late.finish("failed")
    assert [r.id for r in store.runs.list(kind="training")] == [early.id]
    assert [r.id for r in store.runs.list(state="failed")] == [late.id]
    assert [r.id for r in store.runs.list(since=clock.now)] == [late.id]
    assert [r.id for r in store.runs.list(key="g")] == [late.id]
    feed = store.runs.events()
    assert [(e.run_id, e.state) for e in feed] == [(early.id, "running"), (late.id, "running"), (late.id, "failed")]
    assert [e.seq for e in store.runs.events(since=feed[0].seq)] == [feed[1].seq, feed[2].seq]
    assert feed[1].at == clock.now.isoformat(timespec="microseconds")
    assert early.started_at == datetime(2030, 1, 1, tzinfo=UTC)


def test_bad_run_arguments_are_refused(runs_store):
    """Kinds, keys, states and parents are checked before anything is recorded."""
    store = runs_store
    with pytest.raises(InvalidInputError, match="not a valid run kind"):
        store.runs.start("Training Job", config={})
    with pytest.raises(InvalidInputError, match="not a valid run key"):
        store.runs.start("training", config={}, key="a\nb")
    with pytest.raises(NotFoundError):
        store.runs.start("training", config={}, parents=["sha256:" + "9" * 64])
    with pytest.raises(InvalidInputError, match="not a run state"):
        store.runs.list(state="done")
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        store.runs.get("nope")
    assert store.runs.list() == []
