"""The rollout state machine on a fake clock, a real store and simulated traffic."""

from __future__ import annotations

import pytest
from rollout_kit import CONTROLLER, ENV, FAST, MODEL, Behaviour, Clock, World, spec, store_as, two_models

from factory.errors import InvalidInputError, RefProtectedError, RunInProgressError, UserError
from factory.serve import (
    EVIDENCE_KIND,
    Rollout,
    RolloutConfig,
    RolloutMetrics,
    drive,
    post_command,
    rollout_status,
    version_of,
)

ENV_REF = f"model/{MODEL}/{ENV}"


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def host(home):
    """The store as the rollout's host sees it: acting as factory-controller."""
    return store_as(home, CONTROLLER)


def _start(host, behaviour: Behaviour, config: RolloutConfig = FAST, **parts):
    candidate, incumbent = two_models(host)
    clock = Clock()
    world = World(clock, {version_of(incumbent): Behaviour(), version_of(candidate): behaviour})
    rollout = Rollout.begin(host, spec(candidate, incumbent, config), traffic=world.traffic, signals=world.signals,
                            clock=clock, **parts)
    return rollout, world, candidate, incumbent


def _events(rollout):
    return [e.details.get("event") for e in rollout.run.events() if e.details.get("event")]


def _weights(world, version):
    return [c.weight(version) for c in world.traffic.history]


def test_a_good_candidate_goes_through_shadow_and_every_step_to_promoted(host):
    """Shadow, 5, 25, 50, 100 %, then model/iris/prod moves to the candidate by CAS, with history."""
    metrics = RolloutMetrics()
    rollout, world, candidate, incumbent = _start(host, Behaviour(), metrics=metrics)
    world.run(rollout, 200)
    assert rollout.state.outcome == "promoted" and rollout.run.refresh().state == "succeeded"
    assert _events(rollout) == ["started", "passed", "stage", "passed", "stage", "passed", "stage", "passed",
                                "stage", "passed", "promoted"]
    assert _weights(world, version_of(candidate)) == [0.0, 5.0, 25.0, 50.0, 100.0, 100.0]
    assert world.traffic.history[0].shadows == {version_of(candidate): 100.0}
    assert world.traffic.current(MODEL).weights == {version_of(candidate): 100.0}
    generations = [c.generation for c in world.traffic.history]
    assert generations == sorted(set(generations))
    moves = host.refs.history(ENV_REF)
    assert [(m.old, m.new, m.actor) for m in moves[-1:]] == [(incumbent, candidate, CONTROLLER)]
    assert world.lost == 0  # every request went to a version the replicas held
    text = metrics.render().decode()
    assert 'factory_rollout_outcomes_total{env="prod",model="iris",outcome="promoted"} 1.0' in text
    assert 'factory_rollout_analyses_total{env="prod",model="iris",verdict="pass"}' in text
    assert "factory_rollout_shadow_agreement{" in text and 'factory_rollout_step{env="prod",model="iris"} -1.0' in text


@pytest.mark.parametrize("shadow", [True, False])
def test_a_candidate_failing_30_percent_of_requests_is_rolled_back(host, shadow):
    """Traffic goes to 0 at once; evidence and a ticket are written; prod stays on the incumbent."""
    config = FAST.model_copy(update={"shadow": shadow})
    rollout, world, candidate, incumbent = _start(host, Behaviour(error_rate=0.3), config)
    world.run(rollout, 200)
    assert rollout.state.outcome == "rolled-back" and rollout.run.refresh().state == "failed"
    assert world.traffic.current(MODEL).weights == {version_of(incumbent): 100.0}
    assert host.refs.get(ENV_REF) == incumbent
    ended = rollout.run.events()[-1].details
    assert "error rate" in ended["reason"] and ended["automatic"] is True
    evidence = host.artifacts.get(ended["evidence"])
    assert evidence.kind == EVIDENCE_KIND and rollout.run.outputs()["evidence"] == evidence.digest
    figures = evidence.metadata["analysis"]["candidate"]
    assert figures["error_rate"] > 0.2 and figures["requests"] >= FAST.min_requests
    ticket = host.artifacts.get(host.refs.require(f"ticket/{ended['ticket']}"))
    assert ticket.kind == "ticket" and ticket.metadata["evidence"] == evidence.digest
    cand = version_of(candidate)
    if shadow:
        assert world.user_errors.get(cand, 0) == 0  # caught in shadow: no user ever saw the candidate
    else:
        # The errors users saw stay within the canary's share: 5 % of requests at a 30 % failure rate.
        assert world.served[cand] <= 0.05 * world.requests * 1.5
        assert world.user_errors[cand] <= 0.05 * 0.3 * world.requests * 1.5


@pytest.mark.parametrize("shadow", [True, False])
def test_a_candidate_ten_times_slower_than_the_bound_is_rolled_back(host, shadow):
    """A p99 of ~1 s against a 100 ms bound fails the latency check and rolls back."""
    config = FAST.model_copy(update={"shadow": shadow})
    rollout, world, candidate, incumbent = _start(host, Behaviour(latency_ms=1000.0), config)
    world.run(rollout, 200)
    assert rollout.state.outcome == "rolled-back"
    assert "p99 latency" in rollout.run.events()[-1].details["reason"]
    assert world.traffic.current(MODEL).weights == {version_of(incumbent): 100.0}
    assert max(_weights(world, version_of(candidate))) == (0.0 if shadow else 5.0)


def test_a_diverging_candidate_is_rolled_back_in_shadow(host):
    """A candidate disagreeing with the incumbent on 40 % of rows never reaches a user."""
    rollout, world, candidate, _ = _start(host, Behaviour(agreement=0.6))
    world.run(rollout, 200)
    assert rollout.state.outcome == "rolled-back" and "disagree" in rollout.run.events()[-1].details["reason"]
    assert max(_weights(world, version_of(candidate))) == 0.0


def test_resume_after_a_crash_mid_step_never_leaves_the_weight_above_the_last_passed_step(host):
    """A host dies at 25 % with only 5 % passed: the new host sets 5 % first, then carries on to promotion."""
    rollout, world, candidate, _ = _start(host, Behaviour())
    cand = version_of(candidate)
    world.run(rollout, 200, until=lambda r: r.state.weight == 25.0 and r.state.stage != r.state.passed)
    assert (rollout.state.weight, rollout.spec.config.stages()[rollout.state.passed]) == (25.0, 5.0)
    applied = len(world.traffic.history)
    world.run(rollout, 3)  # mid-step, then the host is gone: only its run record is left
    del rollout

    reopened = Rollout.open(host, host.runs.get(world_run_id(host)), traffic=world.traffic, signals=world.signals,
                            clock=world.clock)
    first = world.traffic.history[applied]
    assert first.weight(cand) == 5.0 and first.generation > world.traffic.history[applied - 1].generation
    assert _events(reopened)[-1] == "recovered"
    world.run(reopened, 200)
    assert reopened.state.outcome == "promoted"
    assert _weights(world, cand)[applied:] == [5.0, 25.0, 50.0, 100.0, 100.0]


def world_run_id(store) -> str:
    (run,) = store.runs.list(kind="rollout")
    return run.id


class _HostKilled(BaseException):
    """The host process dying where it is (a BaseException: nothing on the way catches it)."""


def test_a_host_killed_as_it_promotes_leaves_the_next_host_to_send_all_traffic_to_the_candidate(host, monkeypatch):
    """Killed after the ref moved but before the candidate serves alone: the next host ends the promotion with
    every request on the candidate and the incumbent unloaded, as an undisturbed rollout does; prod moved once."""
    rollout, world, candidate, incumbent = _start(host, Behaviour())
    apply = world.traffic.apply

    def dies_serving_one_version(config):
        if len(config.weights) == 1:
            raise _HostKilled
        apply(config)

    monkeypatch.setattr(world.traffic, "apply", dies_serving_one_version)
    with pytest.raises(_HostKilled):
        world.run(rollout, 200)
    monkeypatch.undo()
    assert host.refs.get(ENV_REF) == candidate and world.traffic.current(MODEL).weight(version_of(incumbent)) == 0

    reopened = Rollout.open(host, host.runs.get(rollout.run.id), traffic=world.traffic, signals=world.signals,
                            clock=world.clock)
    world.run(reopened, 20)
    assert reopened.state.outcome == "promoted" and _events(reopened).count("promoted") == 1
    assert world.traffic.current(MODEL).weights == {version_of(candidate): 100.0}
    assert [(m.old, m.new) for m in host.refs.history(ENV_REF)] == [(None, incumbent), (incumbent, candidate)]


def test_a_crash_before_any_step_passed_recovers_to_shadow_only(host):
    """Dying in the shadow stage recovers to 0 % with the shadow on, never to a canary weight."""
    rollout, world, candidate, _ = _start(host, Behaviour())
    world.run(rollout, 3)
    applied = len(world.traffic.history)
    Rollout.open(host, rollout.run, traffic=world.traffic, signals=world.signals, clock=world.clock)
    recovered = world.traffic.history[applied]
    assert recovered.weight(version_of(candidate)) == 0.0 and recovered.shadows == {version_of(candidate): 100.0}


def test_pause_resume_and_manual_rollback_are_recorded_with_who_and_why(host, home):
    """A pause holds the weight past its window; resume goes on; a manual rollback ends it, each with actor and reason."""
    rollout, world, candidate, incumbent = _start(host, Behaviour())
    alice, bob = store_as(home, "alice"), store_as(home, "bob")
    world.run(rollout, 200, until=lambda r: r.state.stage == 1)
    post_command(alice, rollout.run.id, "pause", "checking a dashboard")
    drive(rollout, stop=_stop_after(1))
    world.run(rollout, 60)
    assert rollout.state.paused and rollout.state.stage == 1 and rollout.state.weight == 5.0
    post_command(alice, rollout.run.id, "resume", "dashboard is fine")
    drive(rollout, stop=_stop_after(1))
    world.run(rollout, 200, until=lambda r: r.state.stage == 3)
    assert rollout.state.weight == 50.0
    rollout.rollback(bob.settings.actor, "customer complaint")
    assert rollout.state.outcome == "rolled-back" and rollout.run.refresh().state == "cancelled"
    assert world.traffic.current(MODEL).weights == {version_of(incumbent): 100.0}
    said = [(e.details["event"], e.details.get("by"), e.details.get("reason")) for e in rollout.run.events()
            if e.details.get("event") in ("paused", "resumed", "rolled-back")]
    assert said == [("paused", "alice", "checking a dashboard"), ("resumed", "alice", "dashboard is fine"),
                    ("rolled-back", "bob", "customer complaint")]
    assert host.refs.get(ENV_REF) == incumbent
    assert "ticket" not in rollout.run.events()[-1].details  # a person decided: no remediation ticket


def _stop_after(ticks: int):
    """A stop event for ``drive`` that is set after ``ticks`` ticks (the loop checks it before sleeping)."""
    import threading

    class Stop(threading.Event):
        def __init__(self):
            super().__init__()
            self.left = ticks

        def wait(self, timeout=None):
            self.left -= 1
            if self.left <= 0:
                self.set()
            return self.is_set()

        def is_set(self):
            return self.left <= 0

    return Stop()


def test_a_release_manager_promotes_by_hand_and_the_move_is_theirs(host, home):
    """Named release managers may promote mid-rollout; the ref's history names them and the run ends."""
    rollout, world, candidate, _ = _start(host, Behaviour())
    host.refs.protect("model/*/prod", [CONTROLLER, "carol"])
    world.run(rollout, 200, until=lambda r: r.state.stage == 2)
    rollout.promote(store_as(home, "carol").refs, "hotfix must ship")
    assert rollout.state.outcome == "promoted" and host.refs.get(ENV_REF) == candidate
    assert host.refs.history(ENV_REF)[-1].actor == "carol"
    last = rollout.run.events()[-1].details
    assert (last["by"], last["reason"]) == ("carol", "hotfix must ship")


def test_a_refused_promotion_leaves_the_rollout_paused_and_saying_why(home):
    """A host not allowed to move prod stops at 100 % with a clear reason; an unlisted person is refused too."""
    host = store_as(home, "someone-else")
    admin = store_as(home, CONTROLLER)
    rollout, world, candidate, incumbent = _start(admin, Behaviour())
    rollout.store = host  # the host process acts as an actor the prod rule does not list
    world.run(rollout, 200, until=lambda r: r.state.blocked is not None)
    state = rollout.state
    assert not state.ended and state.paused and "promotion refused" in state.blocked
    assert state.passed == len(FAST.stages()) - 1 and host.refs.get(ENV_REF) == incumbent
    assert host.refs.history(ENV_REF, refused=True)[-1].refused
    status = rollout_status(rollout.run, world.clock())
    assert "paused itself: promotion refused" in status.headline and status.time_left_s is None
    world.run(rollout, 30)
    assert rollout.state.paused and not rollout.state.ended  # stays put until a person acts
    with pytest.raises(RefProtectedError):
        rollout.promote(store_as(home, "mallory").refs, "let me")
    refused = rollout.run.events()[-1].details
    assert (refused["event"], refused["by"], refused["reason"]) == ("refused", "mallory", "let me")
    rollout.promote(admin.refs, "release manager approves")
    assert rollout.state.outcome == "promoted" and host.refs.get(ENV_REF) == candidate


def test_an_inconclusive_stage_pauses_instead_of_promoting(host):
    """Too little traffic to judge within max_stage_s pauses the rollout rather than passing it."""
    config = FAST.model_copy(update={"min_requests": 10_000, "max_stage_s": 30.0})
    rollout, world, _, _ = _start(host, Behaviour(), config)
    world.run(rollout, 60, until=lambda r: r.state.paused)
    assert rollout.state.paused and "undecided" in rollout.state.blocked and rollout.state.passed == -1


def test_starting_is_refused_when_prod_moved_or_another_rollout_is_live(host):
    """A rollout starts only against what prod serves now, and one at a time per model and environment."""
    rollout, world, candidate, incumbent = _start(host, Behaviour())
    other = host.artifacts.add("model", metadata={"name": MODEL, "v": 3}).digest
    with pytest.raises(UserError, match="has not ended"):
        Rollout.begin(host, spec(other, incumbent), traffic=world.traffic, signals=world.signals, clock=world.clock)
    with pytest.raises(InvalidInputError, match="not at the incumbent"):
        Rollout.begin(host, spec(other, candidate), traffic=world.traffic, signals=world.signals, clock=world.clock)
    with pytest.raises(RunInProgressError, match=rollout.run.id):  # the same key, hosted by a live process
        Rollout.begin(host, spec(candidate, incumbent), traffic=world.traffic, signals=world.signals,
                      clock=world.clock)


def test_commands_are_applied_once_and_after_the_end_nothing_moves(host, home):
    """Each queued command acts once, one that cannot apply is recorded as such, and an ended rollout refuses more."""
    rollout, world, _, _ = _start(host, Behaviour())
    alice = store_as(home, "alice")
    post_command(alice, rollout.run.id, "pause", "hold")
    drive(rollout, stop=_stop_after(1))
    drive(rollout, stop=_stop_after(1))
    assert _events(rollout).count("paused") == 1
    post_command(alice, rollout.run.id, "resume", "go")
    post_command(alice, rollout.run.id, "resume", "go again")  # not paused any more: recorded as not applied
    drive(rollout, stop=_stop_after(3))
    assert _events(rollout).count("resumed") == 1 and _events(rollout).count("ignored") == 1
    assert "not paused" in rollout.state.note
    post_command(alice, rollout.run.id, "rollback", "enough")
    drive(rollout, stop=_stop_after(5))
    assert rollout.state.outcome == "rolled-back"
    with pytest.raises(InvalidInputError, match="already ended"):
        rollout.pause("alice", "too late")
    with pytest.raises(InvalidInputError, match="not a rollout command"):
        post_command(alice, rollout.run.id, "explode", "why not")


def test_unreadable_signals_hold_the_rollout_and_never_decide_it(host, caplog):
    """A monitoring outage neither passes nor rolls back; it is logged once, and a long one pauses the rollout."""
    from factory.errors import SignalsUnavailableError

    class Down:
        def figures(self, *args, **kwargs):
            raise SignalsUnavailableError("cannot query Prometheus at http://prometheus:9090: refused")

    config = FAST.model_copy(update={"max_stage_s": 30.0})
    rollout, world, candidate, _ = _start(host, Behaviour(), config)
    rollout.signals = Down()
    with caplog.at_level("WARNING", logger="factory.serve._rollout"):
        world.run(rollout, 60, until=lambda r: r.state.paused)
    assert rollout.state.passed == -1 and not rollout.state.ended and rollout.state.weight == 0.0
    assert "signals could not be read" in rollout.state.blocked
    assert sum("cannot read signals" in r.getMessage() for r in caplog.records) == 1
