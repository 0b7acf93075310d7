"""Run faults: many processes starting one key at once, an owner killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from factory.settings import Settings

pytestmark = pytest.mark.catalogs

_HEADER = "import json, os, sys, time; from factory.store import Store; from factory.settings import Settings\n"


def _store(settings: Settings):
    from factory.store import Store

    return Store(settings=settings)


def _open(settings: Settings) -> str:
    """The line of code that opens the same store in a child process."""
    return f"s = Store(settings=Settings(home={settings.home!r}, catalog={settings.catalog!r}))"


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _HEADER + code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_processes_starting_one_key_at_once_make_one_run(tmp_path, store_settings):
    """Four processes start the same key together: one run exists, and the others are told who owns it."""
    go, done = tmp_path / "go", tmp_path / "done"
    _store(store_settings).catalog.set_meta("created-by", "test")  # the catalog exists before the race
    code = f"""
from factory.errors import RunInProgressError
{_open(store_settings)}
while not os.path.exists({str(go)!r}):
    time.sleep(0.005)
try:
    run = s.runs.start("training", config={{"lr": 0.1}}, key="same-key")
except RunInProgressError as exc:
    print(json.dumps(["refused", exc.run_id]))
    sys.exit(0)
print(json.dumps(["started", run.id]))
while not os.path.exists({str(done)!r}):
    time.sleep(0.01)
run.finish()
"""
    procs = [_spawn(code) for _ in range(4)]
    time.sleep(1.5)  # let every interpreter reach the barrier
    go.touch()
    outcomes = [json.loads(p.stdout.readline()) for p in procs]
    done.touch()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    started = [run_id for what, run_id in outcomes if what == "started"]
    refused = [run_id for what, run_id in outcomes if what == "refused"]
    assert len(started) == 1 and refused == started * 3
    store = _store(store_settings)
    assert [r.id for r in store.runs.list(key="same-key")] == started
    assert [a.metadata["run_id"] for a in store.artifacts.find("run")] == started
    assert [r.name for r in store.refs.list("run/")] == [f"run/{started[0]}"]
    assert store.runs.get(started[0]).state == "succeeded"


def test_owner_killed_between_output_and_finish_reads_interrupted_and_resumes(store_settings):
    """SIGKILL after an output: the run reads interrupted with that output, and its key resumes it."""
    code = f"""
{_open(store_settings)}
run = s.runs.start("training", config={{"epochs": 2}}, key="resumable")
run.log_metrics(1, {{"loss": 0.5}})
run.output("epoch-1", s.blobs.put(b"weights after epoch 1"))
print(run.id)
time.sleep(600)
run.finish()
"""
    proc = _spawn(code)
    run_id = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    store = _store(store_settings)
    run = store.runs.get(run_id)
    assert run.state == "interrupted"
    assert list(run.outputs()) == ["epoch-1"] and [m.value for m in run.metrics()] == [0.5]
    resumed = store.runs.start("training", config={"epochs": 2}, key="resumable")
    assert resumed.resumed and resumed.id == run_id
    assert list(resumed.outputs()) == ["epoch-1"]  # a restart sees what was committed and skips it
    resumed.output("epoch-2", store.blobs.put(b"weights after epoch 2"))
    resumed.finish()
    final = store.runs.get(run_id)
    assert final.state == "succeeded" and list(final.outputs()) == ["epoch-1", "epoch-2"]
    assert [e.state for e in final.events()] == ["running", "running", "succeeded"]
    assert final.events()[1].details["resumed"] is True
