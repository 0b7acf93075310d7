"""A rollout host killed mid-step: the run record is enough to carry on, never above the last passed step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rollout_host import FileTraffic

from factory.serve import MemorySignals, RolloutSpec, replay, take_over
from factory.settings import Settings
from factory.store import Store

HOST = Path(__file__).with_name("rollout_host.py")


def test_a_host_killed_mid_step_resumes_from_its_run_at_the_last_passed_weight(tmp_path):
    """SIGKILL while the candidate is at 25 % or more: the next host sets the last passed step's weight first."""
    home, traffic_path = tmp_path / "home", tmp_path / "traffic.jsonl"
    store = Store(home, settings=Settings(home=str(home), actor="factory-controller"))
    incumbent = store.artifacts.add("model", metadata={"v": 1}).digest
    candidate = store.artifacts.add("model", metadata={"v": 2}).digest
    store.refs.set("model/iris/prod", incumbent)
    host = subprocess.Popen([sys.executable, str(HOST), str(home), str(traffic_path), candidate, incumbent],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        started = json.loads(host.stdout.readline())
        cand = started["candidate"]
        deadline = time.monotonic() + 300
        while not any(c.weight(cand) >= 25 for c in FileTraffic(str(traffic_path)).history()):
            assert host.poll() is None and time.monotonic() < deadline, "the host never reached the 25 % step"
            time.sleep(0.05)
    finally:
        os.kill(host.pid, signal.SIGKILL)
        host.wait(timeout=60)

    applied_by_dead_host = FileTraffic(str(traffic_path)).history()
    run = store.runs.get(started["run"])
    assert run.state == "interrupted" and run.owner.pid == host.pid
    state = replay(e.details for e in run.events())
    stages = RolloutSpec.model_validate(run.config).config.stages()
    last_passed = stages[state.passed] if state.passed >= 0 else 0.0

    traffic = FileTraffic(str(traffic_path))
    rollout = take_over(store, run, traffic=traffic, signals=MemorySignals())
    first = traffic.history()[len(applied_by_dead_host)]
    assert first.weight(cand) == last_passed <= applied_by_dead_host[-1].weight(cand)
    assert first.generation > applied_by_dead_host[-1].generation
    assert rollout.run.owner.pid == os.getpid() and rollout.state.stage == rollout.state.passed
    recovered = rollout.run.events()[-1].details
    assert recovered["event"] == "recovered" and recovered["weight"] == last_passed
