"""Admission on a real store: environment policies behind refs, attestations proven from the log."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from factory.errors import AdmissionDeniedError, NotFoundError, RefProtectedError
from factory.gates import (
    CONTRACT_TYPE,
    DEFAULT_ENVIRONMENTS,
    EnvironmentPolicy,
    admit,
    environment,
    list_environments,
    override,
    policy_type,
    run_gate,
    set_environment,
)
from factory.gates.policies import ContractPolicy

from gates_kit import (
    add_dataset,
    as_actor,
    biased_package,
    credit_table,
    fair_package,
    gated_store,
    quality_config,
    quick_set,
)

FAIRNESS = policy_type("fairness")
QUALITY = policy_type("quality")


class Clock:
    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def prod_without_fairness(store):
    """Every policy the prod environment requires except fairness, on real datasets."""
    add_dataset(store, "credit", credit_table(300))
    add_dataset(store, "credit-now", credit_table(300, seed=1))
    drift = {"reference": "credit", "current": "credit-now", "features": ["x", "income"]}
    return quick_set("contract", "security", "model-card", "quality", "drift", quality=quality_config(0.9),
                     drift=drift, contract={"runs": 3, "budget_s": 0.5})


def test_a_candidate_missing_one_prod_attestation_runs_in_dev_and_prod_names_what_is_missing(tmp_path):
    """Without its fairness attestation a candidate is admitted to dev; prod refuses, naming fairness."""
    clock = Clock(datetime(2026, 3, 1, tzinfo=UTC))
    store = gated_store(tmp_path, clock=clock)
    digest = fair_package(store).digest
    assert run_gate(store, digest, prod_without_fairness(store)).passed
    assert admit(store, digest, "dev").allowed
    prod = admit(store, digest, "prod")
    assert not prod.allowed
    assert [(r.predicate_type, r.reason) for r in prod.missing] == [(FAIRNESS, "no attestation")]
    assert FAIRNESS in prod.explain()
    assert {a.index for a in prod.counted} == {0, 1, 2, 3, 4}
    with pytest.raises(AdmissionDeniedError) as denied:
        prod.require()
    assert denied.value.missing == (FAIRNESS,) and denied.value.environment == "prod"
    assert ContractPolicy.predicate_type == CONTRACT_TYPE

    # An attestation older than the environment's freshness window does not count.
    assert admit(store, digest, "dev", now=clock.at + timedelta(days=29)).allowed
    stale = admit(store, digest, "dev", now=clock.at + timedelta(days=31))
    assert not stale.allowed and all("older than dev's limit of 30 days" in r.reason for r in stale.missing)


def test_an_override_counts_where_the_environment_allows_it_and_is_shown(tmp_path):
    """Prod accepts an override of failed quality and names it; an environment allowing none refuses."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = biased_package(store).digest
    edge = EnvironmentPolicy(name="edge", requires=(QUALITY,), overridable=())
    set_environment(store, edge, reason="an edge site that takes no exceptions")
    loose = EnvironmentPolicy(name="lab", requires=(QUALITY,))
    set_environment(store, loose, reason="a lab")
    assert not run_gate(store, digest, quick_set("quality", quality=quality_config(0.9))).passed
    assert "latest result is fail" in admit(store, digest, "lab").missing[0].reason
    done = override(store, digest, "quality", reason="accepted for the pilot")
    assert done.actor == "alice" and done.ticket == f"{digest[7:19]}-quality"
    lab = admit(store, digest, "lab")
    assert lab.allowed and lab.overrides[0].overridden
    assert lab.overrides[0].reason == "overridden by alice: accepted for the pilot"
    assert lab.counted[0].index == done.index and lab.counted[0].is_override
    assert "with overrides" in lab.explain()
    refused = admit(store, digest, "edge")
    assert not refused.allowed and "edge accepts no override for this type" in refused.missing[0].reason
    assert DEFAULT_ENVIRONMENTS["prod"].accepts_override(QUALITY)
    assert not DEFAULT_ENVIRONMENTS["prod"].accepts_override(policy_type("security"))


def test_environment_policies_are_artifacts_behind_refs_and_prods_is_protected(tmp_path):
    """Defaults are written on first use as ref moves; changing prod needs the controller, and is audited."""
    store = gated_store(tmp_path)
    envs = list_environments(store)
    assert set(envs) == {"dev", "staging", "prod"} and envs["prod"] == DEFAULT_ENVIRONMENTS["prod"]
    target = store.refs.require("policy/env/prod")
    assert store.artifacts.get(target).kind == "environment-policy"
    (seeded,) = store.refs.history("policy/env/prod")
    assert seeded.actor == "alice" and "default" in seeded.reason
    rules = {r.pattern: r.actors for r in store.refs.rules()}
    assert rules["policy/env/prod"] == rules["model/*/prod"] and rules["policy/env/staging"] == ("factory-controller",)
    assert "policy/env/dev" not in rules

    laxer = DEFAULT_ENVIRONMENTS["prod"].model_copy(update={"requires": (CONTRACT_TYPE,), "overridable": None})
    with pytest.raises(RefProtectedError):
        set_environment(store, laxer, reason="ship faster")
    assert store.refs.history("policy/env/prod", refused=True)[-1].refused
    controller = as_actor(store, "factory-controller")
    set_environment(controller, laxer, reason="reviewed in change 42")
    assert environment(store, "prod").requires == (CONTRACT_TYPE,)
    assert store.refs.history("policy/env/prod")[-1].reason == "reviewed in change 42"
    with pytest.raises(NotFoundError, match="no environment 'qa'"):
        admit(store, "sha256:" + "0" * 64, "qa")


def test_a_tampered_attestation_does_not_count_and_the_refusal_says_where(tmp_path):
    """A byte flipped in a logged envelope (through SQL): admission refuses, naming the log entry."""
    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    set_environment(store, EnvironmentPolicy(name="edge", requires=(policy_type("security"),)), reason="edge")
    assert run_gate(store, digest, quick_set("security")).passed
    assert admit(store, digest, "edge").allowed
    with sqlite3.connect(store.catalog.location) as db:
        (entry,) = db.execute("SELECT entry FROM log_entries WHERE log='attestations' AND idx=0").fetchone()
        flipped = bytearray(entry)
        flipped[40] ^= 0x01
        db.execute("UPDATE log_entries SET entry=? WHERE log='attestations' AND idx=0", (bytes(flipped),))
    refused = admit(store, digest, "edge")
    assert not refused.allowed
    assert "log entry 0" in refused.missing[0].reason and "factory attest verify" in refused.missing[0].reason


def test_admitting_again_reads_only_what_changed(tmp_path):
    """A replica admitting the same package again reads no checkpoint record it has already verified."""
    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    run_gate(store, digest, quick_set("security"))
    set_environment(store, EnvironmentPolicy(name="edge", requires=(policy_type("security"),)), reason="edge")
    assert admit(store, digest, "edge").allowed
    reads = []
    original = store.catalog.log_read
    store.catalog.log_read = lambda log, start=0, end=None: reads.append((log, start, end)) or original(log, start,
                                                                                                       end)
    assert admit(store, digest, "edge").allowed
    assert [r for r in reads if r[0].endswith(".checkpoints")] == []
    assert [r for r in reads if r[0] == "attestations"] == [("attestations", 0, 1)]  # its entry, to prove it
