"""``factory refs`` as a user runs it: guarded moves, protection rules, history with refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

pytestmark = pytest.mark.catalogs

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def run(*args: str, store, actor: str = "someone@desk") -> subprocess.CompletedProcess:
    """The CLI on ``store``'s home and catalog, acting as ``actor``."""
    env = {**os.environ, "COLUMNS": "250", "FACTORY_ACTOR": actor, "FACTORY_CATALOG": store.settings.catalog}
    return subprocess.run([EXE, *args, "--home", store.home], capture_output=True, text=True, env=env)


def test_a_blob_cannot_become_a_dataset_and_dataset_list_keeps_working(store):
    """`refs set dataset/base BLOB` is refused in one line, so `dataset list` never breaks."""
    store.datasets.add(pa.table({"id": [1, 2]}), name="base", key=["id"])
    blob = store.put_blob(b"just bytes").digest
    moved = run("refs", "set", "dataset/base", blob, store=store)
    assert moved.returncode == 2 and moved.stderr.count("\n") == 1
    assert "is a blob artifact" in moved.stderr
    listed = run("dataset", "list", "--json", store=store)
    assert listed.returncode == 0, listed.stderr
    assert [d["name"] for d in json.loads(listed.stdout)] == ["base"]


def test_protect_refuse_and_history_show_who_tried(store):
    """A protected alias refuses an unlisted actor (exit 2), and `refs history` shows the refusal."""
    a = store.artifacts.add("model", metadata={"v": 1}).digest
    b = store.artifacts.add("model", metadata={"v": 2}).digest
    assert run("refs", "set", "model/fraud/prod", a, store=store, actor="factory-controller").returncode == 0
    refused = run("refs", "set", "model/fraud/prod", b, "--reason", "[/x] hotfix", store=store, actor="bob")
    assert refused.returncode == 2 and "bob may not move model/fraud/prod" in refused.stderr
    shown = run("refs", "history", "model/fraud/prod", store=store)
    assert shown.returncode == 0, shown.stderr
    assert "factory-controller" in shown.stdout and "bob" in shown.stdout and "refused" in shown.stdout
    assert "[/x] hotfix" in shown.stdout
    rows = json.loads(run("refs", "history", "model/fraud/prod", "--json", store=store).stdout)
    assert [(r["actor"], r["refused"]) for r in rows] == [("factory-controller", False), ("bob", True)]

    assert run("refs", "protect", "model/*/dev", "--actor", "alice", store=store, actor="alice").returncode == 0
    assert run("refs", "set", "model/fraud/dev", b, store=store, actor="bob").returncode == 2
    rules = json.loads(run("refs", "rules", "--json", store=store).stdout)
    assert {r["pattern"]: r["actors"] for r in rules} == {
        "model/*/dev": ["alice"], "model/*/prod": ["factory-controller"], "model/*/staging": ["factory-controller"]
    }
    assert run("refs", "unprotect", "model/*/dev", store=store, actor="bob").returncode == 2
    assert run("refs", "unprotect", "model/*/dev", store=store, actor="alice").returncode == 0
