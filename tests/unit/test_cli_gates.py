"""``factory gates``, ``attest``, ``tickets`` and ``keys`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from typer.testing import CliRunner

from factory.contract import Contract, default_registry, package
from factory.errors import InvalidInputError, NotFoundError
from factory.runtime import _cli_gates, _cli_gates_log, _cli_gates_tickets

from gates_kit import CONFIG, add_dataset, biased_package, credit_table, gated_store, quality_config, quick_set

EXE = os.path.join(os.path.dirname(sys.executable), "factory")
runner = CliRunner()


def cli(app, store, *args: str):
    env = {"FACTORY_KEYS": store.settings.keys, "FACTORY_ACTOR": store.settings.actor, "COLUMNS": "200"}
    return runner.invoke(app, [*args, "--home", store.home], env=env, catch_exceptions=True)


def factory(store, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACTORY_HOME": store.home, "FACTORY_KEYS": store.settings.keys,
           "FACTORY_ACTOR": store.settings.actor, "COLUMNS": "200"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=600)


def trained_candidate(store) -> str:
    """An mlp-classifier trained for a few steps with plain torch on a dataset version, packaged, a candidate."""
    train = credit_table(400, seed=3)
    data = add_dataset(store, "credit-train", train)
    x = torch.tensor(np.column_stack([train.column("x").to_numpy(), train.column("group").to_numpy()]),
                     dtype=torch.float32)
    y = torch.tensor(train.column("label").to_numpy())
    model = default_registry().build("mlp-classifier", {**CONFIG, "hidden": [8]}, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model.layers(x), y).backward()
        optimiser.step()
    sig = default_registry().get("mlp-classifier").expected({**CONFIG, "hidden": [8]})
    contract = Contract(name="credit", inputs=sig.inputs, outputs=sig.outputs)
    digest = package(store, model.eval(), contract, parents=[data], metrics={"accuracy": 0.97}).digest
    store.refs.set(f"model/credit/candidates/{digest[7:19]}", digest, reason="trained")
    return digest


def test_a_trained_candidate_goes_through_the_prod_gate_and_the_log_verifies(tmp_path):
    """From the command line: the prod set on a trained candidate, its results shown, admitted, the log verified."""
    store = gated_store(tmp_path, actor="ci")
    digest = trained_candidate(store)
    add_dataset(store, "credit-eval", credit_table(400, seed=4))
    candidate = f"model/credit/candidates/{digest[7:19]}"
    run = factory(store, "gates", "run", candidate, "--set", "prod", "--dataset", "credit-eval", "--label", "label",
                  "--features", "x,group", "--threshold", "accuracy>=0.8", "--sensitive", "group",
                  "--reference", "credit-train", "--current", "credit-eval")
    assert run.returncode == 0, run.stdout + run.stderr
    for policy in ("contract", "security", "model-card", "quality", "fairness", "drift"):
        assert f"  {policy}" in run.stderr  # progress, one line per policy
        assert policy in run.stdout
    assert "all 6 policies passed" in run.stdout
    verify = factory(store, "attest", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "6 entries" in verify.stdout and "every entry, signature and checkpoint verifies" in verify.stdout
    shown = json.loads(factory(store, "gates", "show", candidate, "--json").stdout)
    assert [(r["policy"], r["verdict"], r["verified"]) for r in shown["results"]] == [
        (p, "pass", True) for p in ("contract", "security", "model-card", "quality", "fairness", "drift")]
    admitted = factory(store, "gates", "admit", digest[:19], "--env", "prod")
    assert admitted.returncode == 0 and "admitted" in admitted.stdout
    proof = factory(store, "attest", "prove", "4")
    assert proof.returncode == 0 and "verified: entry 4 is in the tree of size 6" in proof.stdout
    assert "policy/fairness/v1" in proof.stdout and "\u2014 " in proof.stdout  # the signed note's signature line


def test_a_failing_gate_exits_1_opens_a_ticket_and_can_be_overridden(tmp_path):
    """A failed policy: exit 1, a ticket listed; an override by the actor is logged and admits where allowed."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = biased_package(store).digest
    yaml_set = tmp_path / "edge.yaml"
    yaml_set.write_text(quick_set("quality", name="edge", quality=quality_config(0.9)).model_dump_json())
    failed = cli(_cli_gates.app, store, "run", digest[:19], "--set", str(yaml_set))
    assert failed.exit_code == 1 and "FAIL" in failed.output and "1 of 1 failed: quality" in failed.output
    listed = cli(_cli_gates_tickets.tickets_app, store, "--json")
    (ticket,) = json.loads(listed.output)
    assert ticket["policy"] == "quality" and ticket["state"] == "open"
    refused = cli(_cli_gates.app, store, "admit", digest, "--env", "staging")
    assert refused.exit_code == 1 and "quality/v1" in refused.output and "no attestation" in refused.output
    done = cli(_cli_gates.app, store, "override", digest[:19], "--policy", "quality", "--reason", "pilot")
    assert done.exit_code == 0 and "alice overrode quality" in done.output and "closed" in done.output
    shown = cli(_cli_gates.app, store, "show", digest[:19])
    assert "overrides" in shown.output and "pilot" in shown.output and "alice" in shown.output
    assert json.loads(cli(_cli_gates_tickets.tickets_app, store, "--json").output) == []
    closed = json.loads(cli(_cli_gates_tickets.tickets_app, store, "--all", "--json").output)
    assert closed[0]["closed_reason"] == "overridden by alice: pilot"


def test_tickets_close_by_hand(tmp_path):
    """'factory tickets close ID --reason' closes an open ticket; 'show' gives its history."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = biased_package(store).digest
    from factory.gates import run_gate

    (outcome,) = run_gate(store, digest, quick_set("quality", quality=quality_config(0.9))).outcomes
    table = cli(_cli_gates_tickets.tickets_app, store)
    assert outcome.ticket in table.output and "1 open tickets" in table.output
    shown = cli(_cli_gates_tickets.tickets_app, store, "show", outcome.ticket)
    assert "train" in shown.output and f"log index {outcome.index}" in shown.output
    closed = cli(_cli_gates_tickets.tickets_app, store, "close", outcome.ticket, "--reason", "retrained")
    assert closed.exit_code == 0 and "closed" in closed.output
    assert "0 open tickets" in cli(_cli_gates_tickets.tickets_app, store).output


def test_bad_input_is_one_line_naming_the_fix(tmp_path):
    """A set missing its inputs, a bad threshold, an unknown candidate or index: a user error (exit 2)."""
    store = gated_store(tmp_path)
    digest = biased_package(store).digest
    missing = cli(_cli_gates.app, store, "run", digest, "--set", "prod")
    assert isinstance(missing.exception, InvalidInputError) and "--sensitive" in str(missing.exception)
    bad = cli(_cli_gates.app, store, "run", digest, "--set", "staging", "--threshold", "accuracy=0.9")
    assert isinstance(bad.exception, InvalidInputError) and "METRIC>=VALUE" in str(bad.exception)
    assert isinstance(cli(_cli_gates.app, store, "show", "sha256:abcdef12").exception, NotFoundError)
    assert isinstance(cli(_cli_gates_log.attest_app, store, "prove", "3").exception, NotFoundError)
    done = factory(store, "gates", "run", digest, "--set", "nope")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "neither a built-in gate set" in done.stderr


def test_keys_list_export_trust_rotate(tmp_path):
    """The keys group: list the trusted keys, export one, trust another's, rotate (the old one retired)."""
    store, other = gated_store(tmp_path), gated_store(tmp_path, name="other")
    exported = cli(_cli_gates_log.keys_app, other, "export").output.strip().splitlines()[0]
    trusted = cli(_cli_gates_log.keys_app, store, "trust", exported, "--name", "other-host")
    assert trusted.exit_code == 0 and "other-host" in trusted.output
    mine = cli(_cli_gates_log.keys_app, store, "export").output.strip().splitlines()[0]
    assert cli(_cli_gates_log.keys_app, store, "rotate").exit_code == 0
    assert cli(_cli_gates_log.keys_app, store, "export").output.strip().splitlines()[0] != mine
    listing = json.loads(cli(_cli_gates_log.keys_app, store, "list", "--json").output)
    assert sorted((k["name"], k["status"]) for k in listing["trusted"]) == [
        ("attestation", "active"), ("attestation", "retired"), ("other-host", "active")]
    assert isinstance(cli(_cli_gates_log.keys_app, store, "trust", "not base64!", "--name", "x").exception,
                      InvalidInputError)


def test_verifying_a_store_that_never_logged_anything_is_ok_and_writes_nothing(tmp_path):
    """'factory attest verify' on a fresh home: an empty log verifies, and no catalog file is made."""
    store = gated_store(tmp_path)
    done = cli(_cli_gates_log.attest_app, store, "verify", "--json")
    assert done.exit_code == 0 and json.loads(done.output)["entries"] == 0
    assert not os.path.exists(store.catalog.location)
