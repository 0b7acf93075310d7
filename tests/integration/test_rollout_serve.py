"""Rollouts on a real Ray Serve: the model servers route, shadow and measure; the rollout moves their traffic.

Each test serves the iris MLP, puts steady load on it from client threads, and drives a
rollout of a candidate with short windows (the host ticks in the test process, reading
the cluster's signals collector that every replica reports to). A good candidate is
promoted with no request lost; one failing 30 % of calls and one far slower than its
contract's bound are rolled back on their own.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import pytest

from serve_kit import Load

from factory.serve import RolloutConfig, deploy, drive, read_state, start_rollout, version_of

ENV = "dev"


@pytest.fixture
def controller(store):
    """The same store acting as the controller (the rollout's actor)."""
    from factory.store import Store

    return Store(store.home, settings=dataclasses.replace(store.settings, actor="factory-controller"))


@pytest.fixture
def serving(controller, mlp_package, serve_url):
    """The iris MLP (seed 0) served in dev as 'iris'; its infer URL and package."""
    incumbent = mlp_package()
    done = deploy(controller, incumbent.digest, ENV, timeout_s=180)
    return done.url + "/infer", incumbent


def _roll(store, candidate: str, config: RolloutConfig, limit_s: float = 300.0):
    """Start and host the rollout here until it ends (or ``limit_s`` passes); the rollout."""
    rollout = start_rollout(store, candidate, ENV, config)
    stop = threading.Event()
    timer = threading.Timer(limit_s, stop.set)
    timer.start()
    try:
        drive(rollout, tick_s=0.25, stop=stop)
    finally:
        timer.cancel()
    assert rollout.state.ended, f"the rollout did not end within {limit_s:.0f} s: {rollout.state}"
    return rollout


def _events(rollout) -> dict[str, dict]:
    return {e.details["event"]: e.details for e in rollout.run.events() if e.details.get("event")}


def test_a_good_candidate_goes_through_shadow_and_every_step_to_promoted_losing_no_request(
        controller, serving, faulty_package):
    """Same answers, no faults: shadow, 20, 60 and 100 % pass; the env ref moves; every request got a 200."""
    url, incumbent = serving
    candidate = faulty_package()  # the same weights as the incumbent, packaged as another architecture
    config = RolloutConfig(steps=(20, 60, 100), window_s=1.5, min_requests=15, min_compared=15,
                           p99_latency_ms=5000.0)
    with Load(url) as load:
        rollout = _roll(controller, candidate.digest, config)
        time.sleep(1.0)  # answers after the promotion
    assert rollout.state.outcome == "promoted"
    events = [e.details["event"] for e in rollout.run.events() if e.details.get("event")]
    assert events.count("passed") == 4 and events[-1] == "promoted"
    assert controller.refs.get(f"model/iris/{ENV}") == candidate.digest
    state = read_state(controller, "iris")
    assert state.primary == candidate.digest and state.traffic().weights == {version_of(candidate.digest): 100.0}
    statuses = [status for _, status, _ in load.answers]
    # No request lost through every traffic change (each stage above judged min_requests of its own; how many
    # more came is the machine's speed).
    assert statuses and set(statuses) == {200}
    assert {v for _, _, v in load.answers} == {version_of(incumbent.digest), version_of(candidate.digest)}


def test_a_candidate_failing_30_percent_is_rolled_back_with_user_errors_within_its_share(
        controller, serving, faulty_package):
    """A 20 % canary failing 30 % of calls: rolled back, users saw at most its share in errors, 0 % soon after."""
    url, incumbent = serving
    candidate = faulty_package(fail_rate=0.3)
    config = RolloutConfig(shadow=False, steps=(20, 100), window_s=1.5, min_requests=15, p99_latency_ms=5000.0)
    with Load(url) as load:
        rollout = _roll(controller, candidate.digest, config)
        rolled_back_at = _events(rollout)["rolled-back"]["t"]
        while time.time() < rolled_back_at + 7:
            time.sleep(0.2)
    assert rollout.state.outcome == "rolled-back" and rollout.run.state == "failed"
    during = [(status, version) for sent, status, version in load.answers if sent <= rolled_back_at]
    errors = sum(1 for status, _ in during if status != 200)
    assert errors > 0 and errors / len(during) <= 0.20  # within the canary's share of traffic
    late = [version for sent, status, version in load.answers if sent > rolled_back_at + 5]
    assert late and version_of(candidate.digest) not in late  # the candidate's traffic went to 0
    assert controller.refs.get(f"model/iris/{ENV}") == incumbent.digest
    done = _events(rollout)["rolled-back"]
    assert done["automatic"] and done["evidence"] and done["analysis"]["verdict"] == "fail"


def test_a_candidate_ten_times_slower_than_its_bound_is_rolled_back_from_its_shadow(
        controller, serving, faulty_package):
    """A candidate sleeping 500 ms against a 50 ms p99 bound fails on latency in shadow; users never saw it."""
    url, incumbent = serving
    candidate = faulty_package(sleep_ms=500.0, p99_latency_ms=50.0)
    config = RolloutConfig(steps=(20, 100), window_s=1.5, min_requests=8, min_compared=8)
    with Load(url) as load:
        rollout = _roll(controller, candidate.digest, config)
    assert rollout.state.outcome == "rolled-back"
    analysis = _events(rollout)["rolled-back"]["analysis"]
    assert any(c["name"] == "p99-latency" and c["outcome"] == "fail" for c in analysis["checks"]), analysis
    assert {v for _, s, v in load.answers if s == 200} == {version_of(incumbent.digest)}
    assert controller.refs.get(f"model/iris/{ENV}") == incumbent.digest
