"""Gate runs on a real store: a store run, one log batch, findable attestations, tickets, friction."""

from __future__ import annotations

import pytest

from factory.errors import InvalidInputError
from factory.gates import (
    BUILTIN_SETS,
    GateInputs,
    Verdict,
    attestation_log,
    builtin_set,
    close_ticket,
    gate_run,
    get_ticket,
    list_tickets,
    open_attestation,
    promotion_friction,
    run_gate,
)

from gates_kit import add_dataset, biased_package, credit_table, fair_package, gated_store, quality_config, quick_set

FAST = quick_set("security", "model-card")


def test_a_gate_run_is_a_store_run_whose_attestations_are_logged_in_one_batch_and_findable(tmp_path):
    """Each result is one logged, signed attestation, an output of the run, findable by subject."""
    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    gate = run_gate(store, digest, FAST)
    assert gate.passed and gate.first and not gate.reused
    run = store.runs.get(gate.run.id)
    assert (run.kind, run.state, run.parents) == ("gate", "succeeded", (digest,))
    assert run.config["set"]["name"] == "quick"
    log = attestation_log(store)
    assert [o.index for o in gate.outcomes] == [0, 1]
    assert log.checkpoints.size() == 1  # one batch: one storage append, one checkpoint
    found = store.artifacts.find("attestation", where={"subject": digest})
    assert {a.metadata["policy"]: a.digest for a in found} == run.outputs()
    meta = found[0].metadata
    assert {"subject", "predicate_type", "verdict", "log", "index", "policy"} <= set(meta)
    assert {digest, run.digest} <= set(store.lineage.parents(found[0].digest))
    att = open_attestation(store.blobs.get(found[0].digest), log.trust)
    assert att.subject_digest == digest and att.predicate["evaluator"]["actor"] == "alice"


def test_evidence_is_an_artifact_whose_parent_is_the_package(tmp_path):
    """What a policy measured is recorded as evidence of the package it judged, not a bare blob."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = fair_package(store).digest
    gate = run_gate(store, digest, quick_set("quality", quality=quality_config(0.9)))
    evidence = gate.outcomes[0].result.evidence["metrics"]
    artifact = store.artifacts.get(evidence)
    assert artifact.kind == "evidence" and artifact.parents == (digest,)
    assert evidence in store.artifacts.get(gate.outcomes[0].attestation).parents


def test_the_same_gate_again_returns_the_recorded_run_unless_asked_to_rerun(tmp_path):
    """Asking twice judges once: the second call returns the first run's results; --rerun judges again."""
    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    first = run_gate(store, digest, FAST)
    again = run_gate(store, digest, FAST)
    assert again.reused and again.run.id == first.run.id
    assert [(o.policy, o.result.verdict, o.index) for o in again.outcomes] == \
        [(o.policy, o.result.verdict, o.index) for o in first.outcomes]
    assert attestation_log(store).size() == 2
    fresh = run_gate(store, digest, FAST, rerun=True)
    assert fresh.run.id != first.run.id and not fresh.first and [o.index for o in fresh.outcomes] == [2, 3]
    assert gate_run(store, fresh.run.id).outcomes == fresh.outcomes


def test_a_failing_gate_opens_a_ticket_that_a_later_pass_closes(tmp_path):
    """A failure opens one ticket (what failed, evidence, a fix); failing again keeps it; passing closes it."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = biased_package(store).digest
    strict = quick_set("quality", quality=quality_config(0.9))
    failed = run_gate(store, digest, strict)
    assert not failed.passed and failed.outcomes[0].result.verdict is Verdict.FAIL
    (ticket,) = list_tickets(store)
    assert ticket.id == failed.outcomes[0].ticket == f"{digest[7:19]}-quality"
    assert "accuracy" in ticket.failure and "< 0.9" in ticket.failure
    assert ticket.evidence == dict(failed.outcomes[0].result.evidence) and "train" in ticket.suggestion
    assert (ticket.attestation, ticket.index, ticket.run) == (failed.outcomes[0].attestation,
                                                              failed.outcomes[0].index, failed.run.id)
    run_gate(store, digest, strict, rerun=True)
    assert [t.digest for t in list_tickets(store)] == [ticket.digest]  # still the one ticket
    run_gate(store, digest, quick_set("quality", quality=quality_config(0.4)))
    assert list_tickets(store) == []
    closed = get_ticket(store, ticket.id)
    assert not closed.is_open and "quality passed in gate run" in closed.closed_reason
    history = store.refs.history(f"ticket/{ticket.id}")
    assert [h.actor for h in history] == ["alice", "alice"] and history[1].old == ticket.digest


def test_a_ticket_is_closed_by_hand_with_a_reason_and_reopened_by_the_next_failure(tmp_path):
    """Closing needs a reason and moves the ref to a closed ticket; a new failure opens it again."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = biased_package(store).digest
    strict = quick_set("quality", quality=quality_config(0.9))
    run_gate(store, digest, strict)
    (ticket,) = list_tickets(store)
    with pytest.raises(InvalidInputError, match="reason"):
        close_ticket(store, ticket.id, reason=" ")
    closed = close_ticket(store, ticket.id, reason="retraining on more data")
    assert closed.closed_by == "alice" and store.artifacts.get(closed.digest).parents == (ticket.digest,)
    with pytest.raises(InvalidInputError, match="already closed"):
        close_ticket(store, ticket.id, reason="again")
    assert list_tickets(store) == [] and [t.state for t in list_tickets(store, include_closed=True)] == ["closed"]
    run_gate(store, digest, strict, rerun=True)
    assert [t.id for t in list_tickets(store)] == [ticket.id]


def test_promotion_friction_is_the_share_of_candidates_failing_their_first_gate_run(tmp_path):
    """Two candidates, one failing its first run and passing later: friction is one half, from the runs."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    biased, fair = biased_package(store).digest, fair_package(store).digest
    assert promotion_friction(store).share is None
    first = run_gate(store, biased, quick_set("quality", quality=quality_config(0.9)))
    run_gate(store, biased, quick_set("quality", quality=quality_config(0.4)))
    run_gate(store, fair, quick_set("quality", quality=quality_config(0.9)))
    friction = promotion_friction(store)
    assert (friction.candidates, friction.failed_first, friction.failed, friction.share) == (2, 1, (biased,), 0.5)
    assert {m.name: m.value for m in first.run.metrics()} == {"policies": 1.0, "failed": 1.0, "first_gate_run": 1.0}
    assert promotion_friction(store, set_name="other").candidates == 0


def test_built_in_sets_say_which_inputs_they_need():
    """The prod set names every input a pipeline must fill in; given them, it builds."""
    with pytest.raises(InvalidInputError) as info:
        builtin_set("prod", GateInputs(dataset="eval"))
    message = str(info.value)
    for need in ("label", "thresholds", "sensitive", "reference", "current"):
        assert need in message
    assert "dataset (" not in message
    inputs = GateInputs(dataset="eval@2", label="y", thresholds={"accuracy": {"min": 0.8}}, sensitive="group",
                        reference="train@1", current="traffic@7")
    pset = builtin_set("prod", inputs)
    assert [p.id for p in pset.policies] == list(BUILTIN_SETS["prod"])
    fairness = next(p for p in pset.build() if p.id == "fairness")
    assert (fairness.config.dataset, fairness.config.sensitive) == ("eval@2", "group")
    assert builtin_set("dev").build()
    with pytest.raises(InvalidInputError, match="not a built-in gate set"):
        builtin_set("qa")


def test_asking_for_ray_without_a_cluster_is_refused_before_any_run_is_recorded(tmp_path):
    """parallel=True with no Ray connection: a clear error, and no half-started gate run left behind."""
    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    with pytest.raises(InvalidInputError, match="needs a Ray cluster"):
        run_gate(store, digest, FAST, parallel=True)
    assert store.runs.list(kind="gate") == []


def test_a_rollback_ticket_is_listed_beside_gate_tickets_and_does_not_break_the_next_gate_run(tmp_path):
    """After a rollout rolled a candidate back (serve's ticket), the next gate run works and lists both kinds."""
    from factory.serve import StoreTickets, TicketRequest

    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    evidence = store.artifacts.add("rollout-evidence", metadata={"why": "errors"}).digest
    StoreTickets(store).open(TicketRequest(ticket_id="rollback-1", title="iris rolled back in prod",
                                           body="5 % errors at the 10 % stage", subject=digest, evidence=evidence,
                                           run_id="rollout-1", model="iris", env="prod"))
    assert run_gate(store, digest, FAST).passed
    (ticket,) = list_tickets(store)
    assert (ticket.id, ticket.policy, ticket.subject, ticket.subject_name) == ("rollback-1", "rollout", digest, "iris")
    assert ticket.failure == "iris rolled back in prod" and "5 % errors" in ticket.suggestion
    assert ticket.evidence == {"rollout": evidence} and ticket.run == "rollout-1"
    closed = close_ticket(store, "rollback-1", reason="fixed the feature")
    assert not closed.is_open and get_ticket(store, "rollback-1").closed_reason == "fixed the feature"
