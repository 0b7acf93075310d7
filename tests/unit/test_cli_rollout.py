"""``factory rollout``, ``factory promote`` and ``factory rollback`` as users run them: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gates_kit import biased_package, fair_package
from serve_kit import admit_as_dev

from factory.settings import Settings
from factory.store import Store

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def run(home, actor: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "FACTORY_ACTOR": actor}
    return subprocess.run([EXE, *args, "--home", str(home)], capture_output=True, text=True, env=env)


def status(home) -> dict:
    res = run(home, "anyone", "rollout", "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def served(tmp_path):
    """Two real packages of model 'credit', the first serving model/credit/prod."""
    home = tmp_path / "home"
    store = Store(home, settings=Settings(home=str(home), actor="factory-controller"))
    incumbent, candidate = fair_package(store).digest, biased_package(store).digest
    admit_as_dev(store, "prod", incumbent, candidate)
    store.refs.set("model/credit/prod", incumbent, reason="first version")
    return home, store, candidate, incumbent


# A host that begins a rollout and dies at once (no serving layer here: its traffic is recorded on the run).
BEGIN_AND_DIE = """
import json, sys
from factory.serve import MemorySignals, MemoryTraffic, Rollout, RolloutConfig, rollout_spec
from factory.settings import Settings
from factory.store import Store
home, candidate = sys.argv[1:3]
store = Store(home, settings=Settings(home=home, actor="factory-controller"))
spec = rollout_spec(store, candidate, "prod", RolloutConfig(window_s=10, steps=(10, 100)))
print(json.dumps({"run": Rollout.begin(store, spec, traffic=MemoryTraffic(), signals=MemorySignals()).run.id}))
"""


def test_a_rollout_whose_host_died_is_watched_paused_resumed_refused_and_rolled_back_from_the_cli(served):
    """Every verb works on the run record alone; who did what and why is on the run; prod never moved."""
    home, store, candidate, incumbent = served
    started = subprocess.run([sys.executable, "-c", BEGIN_AND_DIE, str(home), candidate[:20]], capture_output=True,
                             text=True)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run"]
    now = status(home)
    assert now["run"] == run_id and now["run_state"] == "interrupted"  # the starting process is gone
    assert "shadow" in now["stage_name"] and [v["role"] for v in now["versions"]] == ["incumbent", "candidate"]
    table = run(home, "anyone", "rollout", "status")
    assert table.returncode == 0 and candidate[7:19] in table.stdout and "shadow" in table.stdout

    paused = run(home, "alice", "rollout", "pause", "--reason", "look first")
    assert paused.returncode == 0, paused.stderr
    assert status(home)["paused"] and "paused by alice: look first" in status(home)["note"]
    resumed = run(home, "alice", "rollout", "resume", "-r", "looks fine")
    assert resumed.returncode == 0 and not status(home)["paused"]
    assert "no process hosts" in resumed.stdout  # no deployment serves it here: recorded, not hosted

    refused = run(home, "mallory", "promote", candidate, "--reason", "ship it")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "mallory" in lines[0]

    rolled = run(home, "bob", "rollback", "--reason", "not today")
    assert rolled.returncode == 0, rolled.stderr
    final = status(home)
    assert final["outcome"] == "rolled-back" and final["run_state"] == "cancelled"
    events = [e.details for e in store.runs.get(run_id).events() if e.details.get("event")]
    said = [(d["event"], d.get("by"), d.get("reason")) for d in events if d["event"] in
            ("paused", "resumed", "refused", "rolled-back")]
    assert said == [("paused", "alice", "look first"), ("resumed", "alice", "looks fine"),
                    ("refused", "mallory", "ship it"), ("rolled-back", "bob", "not today")]
    assert store.refs.get("model/credit/prod") == incumbent
    assert store.refs.history("model/credit/prod", refused=True)[-1].actor == "mallory"


@pytest.mark.parametrize("args, message", [
    (("--steps", "5,50"), "must end at 100"),
    (("--steps", "5,x"), "are not percentages"),
    (("--window", "10x"), "not a duration"),
    (("--env", "staging"), "model/credit/staging is not set"),
    ((), "no deployment serves credit in prod"),
])
def test_bad_rollout_input_exits_2_with_one_line(served, args, message):
    """Bad steps, windows, an environment with nothing to replace or nothing served: exit 2, one line saying what
    to fix, and no rollout begun."""
    home, store, candidate, _ = served
    res = run(home, "factory-controller", "rollout", "start", candidate, *args)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert store.runs.list(kind="rollout") == []


def test_acting_without_a_live_rollout_says_how_to_start_one(served):
    """pause, rollback and status with no rollout exit 2 and point at 'factory rollout start'."""
    home, _, _, _ = served
    for args in (("rollout", "pause", "-r", "x"), ("rollback", "-r", "x"), ("rollout", "status")):
        res = run(home, "alice", *args)
        assert res.returncode == 2 and "factory rollout start" in res.stderr, (args, res.stderr)
