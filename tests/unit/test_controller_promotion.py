"""The controller's promotion rules and hosted rollouts, in-process on a real store with simulated
serving (``rollout_kit.World``) and a fake clock: first versions promoted once, rollouts driven to
their outcome, admission required, no promotion doubled by retries or reruns."""

from __future__ import annotations

import dataclasses

import pytest
from rollout_kit import FAST, Behaviour, Clock, World

from factory.errors import AdmissionDeniedError, NotFoundError, RefConflictError
from factory.runtime import CONTROLLER_ACTOR, Controller, Pipeline, resolve, wait_pipeline
from factory.runtime._promotion import PromotionRules
from factory.runtime._rollouts import RolloutHost
from factory.serve import RolloutConfig, version_of
from factory.store import Store

ENV_REF = "model/iris/prod"


class Admission:
    def __init__(self, allowed: bool = True):
        self.allowed = allowed
        self.asked: list[tuple[str, str]] = []

    def __call__(self, store, digest, env):
        self.asked.append((digest, env))
        return self

    def require(self):
        if not self.allowed:
            raise AdmissionDeniedError(f"{self.asked[-1][0]} is not admitted to {self.asked[-1][1]}")
        return self


@pytest.fixture
def host(store):
    """The store acting as the controller."""
    return Store(store.home, settings=dataclasses.replace(store.settings, actor=CONTROLLER_ACTOR))


@pytest.fixture
def models(mlp_package):
    return mlp_package(seed=0).digest, mlp_package(seed=1).digest


def _controller(host, behaviours=None, admission=None):
    clock = Clock()
    world = World(clock, dict(behaviours or {}))

    def parts(store, spec):
        return {"traffic": world.traffic, "signals": world.signals, "clock": clock}

    def drive(rollout, *, tick_s, stop):
        world.run(rollout, 600)
        return rollout.state

    rules = PromotionRules(host, admit=admission or Admission())
    ctl = Controller(host, rollouts=RolloutHost(host, parts, drive=drive), promotions=rules, loop_s=0.05)
    ctl.start()
    return ctl, world


def _rollout_pipeline(candidate: str, *, allow_rollback: bool = False, config: RolloutConfig = FAST) -> Pipeline:
    p = Pipeline("ship")
    p.step("ship", "rollout", inputs={"model": candidate},
           config={"env": "prod", "allow_rollback": allow_rollback, "rollout": config.model_dump(mode="json")})
    return p


def _run(ctl, store, pipeline, request):
    run_id = ctl.submit(resolve(store, pipeline.spec()), request)
    return wait_pipeline(store, run_id, timeout_s=120, poll_s=0.05)


def _moves(store):
    return [(m.old, m.new, m.actor) for m in store.refs.history(ENV_REF)]


def test_first_version_is_promoted_directly_and_only_once(host, models):
    """With nothing in prod, the candidate is promoted by the controller; running it again moves nothing."""
    candidate, _ = models
    admission = Admission()
    ctl, _ = _controller(host, admission=admission)
    try:
        first = _run(ctl, host, _rollout_pipeline(candidate), "one")
        again = _run(ctl, host, _rollout_pipeline(candidate), "two")
    finally:
        ctl.stop()
    assert first.succeeded and again.reused() == ["ship"]
    assert _moves(host) == [(None, candidate, CONTROLLER_ACTOR)]
    assert admission.asked == [(candidate, "prod")]


def test_a_retried_first_promotion_is_the_same_promotion_not_a_conflict(host, models):
    """A promote command repeated after a crash finds the ref on the candidate and succeeds quietly."""
    candidate, other = models
    rules = PromotionRules(host, admit=Admission())
    plan = rules.plan(candidate, "prod", FAST)
    assert plan.kind == "first"
    assert rules.promote_first(plan, reason="first") is not None
    assert rules.promote_first(plan, reason="first, retried") is None
    assert rules.plan(candidate, "prod", FAST).kind == "serving"
    with pytest.raises(RefConflictError):
        rules.promote_first(dataclasses.replace(plan, candidate=other), reason="someone else")
    assert _moves(host) == [(None, candidate, CONTROLLER_ACTOR)]


def test_a_good_candidate_is_rolled_out_to_promoted_by_the_hosted_rollout(host, models):
    """Against an incumbent, the rollout step drives shadow and canary stages and prod moves once."""
    candidate, incumbent = models
    host.refs.set(ENV_REF, incumbent, reason="first")
    ctl, world = _controller(host, {version_of(incumbent): Behaviour(), version_of(candidate): Behaviour()})
    try:
        status = _run(ctl, host, _rollout_pipeline(candidate), "one")
        rerun = _run(ctl, host, _rollout_pipeline(candidate), "two")
    finally:
        ctl.stop()
    assert status.succeeded, status.error
    assert rerun.reused() == ["ship"]
    assert _moves(host) == [(None, incumbent, CONTROLLER_ACTOR), (incumbent, candidate, CONTROLLER_ACTOR)]
    assert world.traffic.current("iris").weights == {version_of(candidate): 100.0}
    assert len(host.runs.list(kind="rollout")) == 1
    assert set(status.outputs("ship")) == {"model", "rollout"}


def test_an_ended_rollout_is_adopted_without_reaching_serving(host, models):
    """A step resumed after its rollout ended reads the outcome even when the deployment is gone since."""
    candidate, incumbent = models
    host.refs.set(ENV_REF, incumbent, reason="first")
    ctl, _ = _controller(host, {version_of(incumbent): Behaviour(), version_of(candidate): Behaviour()})
    try:
        assert _run(ctl, host, _rollout_pipeline(candidate), "one").succeeded
    finally:
        ctl.stop()

    def gone(store, spec):
        raise NotFoundError("deployment 'iris' is not deployed")

    (run,) = host.runs.list(kind="rollout")
    adopted = RolloutHost(host, gone).adopt(run)
    assert adopted.done.is_set() and adopted.rollout.state.outcome == "promoted"


def test_a_bad_candidate_is_rolled_back_and_fails_the_step(host, models):
    """A candidate failing many requests is rolled back; the step fails saying so, and prod stays."""
    candidate, incumbent = models
    host.refs.set(ENV_REF, incumbent, reason="first")
    ctl, _ = _controller(host, {version_of(incumbent): Behaviour(), version_of(candidate): Behaviour(error_rate=0.3)})
    try:
        status = _run(ctl, host, _rollout_pipeline(candidate), "one")
    finally:
        ctl.stop()
    assert status.state == "failed" and "RolledBackError" in status.error
    assert host.refs.get(ENV_REF) == incumbent


def test_a_candidate_not_admitted_is_refused_before_any_traffic(host, models):
    """Without the attestations prod requires, the step fails at once and nothing moves."""
    candidate, incumbent = models
    host.refs.set(ENV_REF, incumbent, reason="first")
    ctl, world = _controller(host, admission=Admission(allowed=False))
    try:
        p = _rollout_pipeline(candidate)
        status = _run(ctl, host, p, "one")
    finally:
        ctl.stop()
    assert status.state == "failed" and "AdmissionDeniedError" in status.error
    assert status.step("ship").attempt == 1
    assert world.traffic.history == [] and host.refs.get(ENV_REF) == incumbent


def test_controller_replaced_mid_rollout_reaches_the_same_outcome_and_promotes_once(store, models, monkeypatch):
    """A controller that dies in the middle of a canary is replaced: the next takes the rollout and the
    pipeline over, and prod moves to the candidate exactly once."""
    import threading
    from datetime import UTC, datetime, timedelta

    from factory.store import _owner
    from factory.store import runs as runs_module
    from factory.store.catalog import RunOwner

    now = [datetime(2026, 11, 30, 12, tzinfo=UTC)]
    host = Store(store.home, settings=dataclasses.replace(store.settings, actor=CONTROLLER_ACTOR), clock=lambda: now[0])
    candidate, incumbent = models
    host.refs.set(ENV_REF, incumbent, reason="first")
    clock = Clock()
    world = World(clock, {version_of(incumbent): Behaviour(), version_of(candidate): Behaviour()})
    parts = lambda store, spec: {"traffic": world.traffic, "signals": world.signals, "clock": clock}  # noqa: E731
    midway = threading.Event()

    def dies_midway(rollout, *, tick_s, stop):
        world.run(rollout, 25)  # shadow passed, into the canary steps
        midway.set()
        stop.wait()
        return rollout.state

    def drives_on(rollout, *, tick_s, stop):
        world.run(rollout, 600)
        return rollout.state

    monkeypatch.setattr(runs_module, "current_owner", lambda: RunOwner("a-host-that-died", 4242, 0.0))
    first = Controller(host, rollouts=RolloutHost(host, parts, drive=dies_midway),
                       promotions=PromotionRules(host, admit=Admission()), loop_s=0.05)
    first.start()
    run_id = first.submit(resolve(host, _rollout_pipeline(candidate).spec()), "one")
    assert midway.wait(60)
    weight_when_killed = world.traffic.current("iris").weights.get(version_of(candidate), 0.0)
    first.stop()
    monkeypatch.setattr(runs_module, "current_owner", _owner.current_owner)
    now[0] += timedelta(seconds=host.runs.stale_after_s + 1)
    assert host.refs.get(ENV_REF) == incumbent and 0 < weight_when_killed < 100

    second = Controller(host, rollouts=RolloutHost(host, parts, drive=drives_on),
                        promotions=PromotionRules(host, admit=Admission()), loop_s=0.05)
    try:
        second.start()
        status = wait_pipeline(host, run_id, timeout_s=120, poll_s=0.05)
    finally:
        second.stop()
    assert status.succeeded, status.error
    assert _moves(host) == [(None, incumbent, CONTROLLER_ACTOR), (incumbent, candidate, CONTROLLER_ACTOR)]
    (rollout,) = host.runs.list(kind="rollout")
    assert any(e.details.get("resumed") for e in rollout.events())  # taken over, not begun again
    assert any(e.details.get("resumed") for e in host.runs.get(run_id).events())
    assert world.traffic.current("iris").weights == {version_of(candidate): 100.0}
