"""The router: which version answers a request and which get a shadow copy, as pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from factory.serve import RouteRequest, Router, StickyKey, TrafficConfig, route

VERSIONS = ["0a1b2c3d4e5f", "111111111111", "abcdefabcdef", "999999999999"]
N = 4000


@st.composite
def weights(draw, min_versions=2, max_versions=4):
    """Integer percentages over 2-4 versions, summing to 100, some possibly 0."""
    n = draw(st.integers(min_versions, max_versions))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    return dict(zip(VERSIONS[:n], map(float, parts), strict=True))


def _requests(salt: str, n: int = N) -> list[RouteRequest]:
    return [RouteRequest(f"{salt}-{i}") for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(weights(), st.text(min_size=1, max_size=8))
def test_observed_shares_match_the_weights(split, salt):
    """Over many requests each version answers its weight's share, within five standard deviations."""
    router = Router(TrafficConfig(model="m", generation=1, weights=split))
    counts = dict.fromkeys(split, 0)
    for request in _requests(salt):
        counts[router.route(request).primary] += 1
    for version, weight in split.items():
        p = weight / 100
        assert abs(counts[version] / N - p) <= 5 * math.sqrt(p * (1 - p) / N) + 1 / N, (version, counts, split)


@settings(max_examples=40, deadline=None)
@given(weights(), st.dictionaries(st.sampled_from(VERSIONS[:2]), st.floats(0, 100)), st.text(max_size=8))
def test_a_shadow_never_changes_the_primary_answer(split, shadows, salt):
    """Adding or changing shadow targets leaves every request's answering version as it was."""
    plain = Router(TrafficConfig(model="m", generation=1, weights=split))
    shadowed = Router(TrafficConfig(model="m", generation=2, weights=split, shadows=shadows))
    for request in _requests(salt, 500):
        decision = shadowed.route(request)
        assert decision.primary == plain.route(request).primary
        assert decision.primary not in decision.shadows


@settings(max_examples=40, deadline=None)
@given(weights(), st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30))
def test_sticky_keys_always_go_to_the_same_version_while_weights_stay(split, users):
    """Requests carrying the same sticky header reach one version, whatever their ids or generation."""
    sticky = StickyKey(source="header", name="x-user")
    first = Router(TrafficConfig(model="m", generation=1, weights=split, sticky=sticky))
    later = Router(TrafficConfig(model="m", generation=7, weights=split, sticky=sticky, shadows={VERSIONS[0]: 50}))
    for user in users:
        seen = {r.route(RouteRequest(f"req-{i}", {"x-user": user})).primary for i in range(5) for r in (first, later)}
        assert len(seen) == 1, (user, seen)


@settings(max_examples=40, deadline=None)
@given(weights(), st.text(max_size=8))
def test_a_weight_of_zero_gets_nothing(split, salt):
    """A version at 0 % never answers, even when it is a shadow target."""
    zero = [v for v, w in split.items() if w == 0]
    router = Router(TrafficConfig(model="m", generation=1, weights=split, shadows=dict.fromkeys(zero, 100.0)))
    assert not {router.route(r).primary for r in _requests(salt, 1000)} & set(zero)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 99), st.integers(1, 100), st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=50))
def test_raising_the_candidate_weight_keeps_its_sticky_users(low, extra, users):
    """A sticky user on the candidate at one canary step stays on it at the next, larger step."""
    high = min(100, low + extra)
    cand, inc = VERSIONS[0], VERSIONS[1]
    sticky = StickyKey(source="header", name="x-user")

    def router(w):
        return Router(TrafficConfig(model="m", generation=1, weights={inc: 100.0 - w, cand: float(w)}, sticky=sticky))

    before, after = router(low), router(high)
    for user in users:
        request = RouteRequest("r", {"x-user": user})
        if before.route(request).primary == cand:
            assert after.route(request).primary == cand


def test_shadow_share_matches_its_percentage():
    """A 30 % shadow copies about 30 % of the requests the other version answers."""
    cand, inc = VERSIONS[0], VERSIONS[1]
    router = Router(TrafficConfig(model="m", generation=1, weights={inc: 100.0, cand: 0.0}, shadows={cand: 30.0}))
    copied = sum(cand in router.route(r).shadows for r in _requests("s"))
    assert abs(copied / N - 0.3) <= 5 * math.sqrt(0.3 * 0.7 / N)


def test_sticky_by_input_value_treats_seven_and_seven_point_zero_alike():
    """A sticky input key reads the first value, so 7 and 7.0 (or an array) route the same way."""
    config = TrafficConfig(model="m", generation=1, weights={VERSIONS[0]: 50.0, VERSIONS[1]: 50.0},
                           sticky=StickyKey(source="input", name="customer"))
    keys = {Router(config).key(RouteRequest(f"r{i}", inputs={"customer": value}))
            for i, value in enumerate([[7], [7.0], np.array([[7], [8]]), 7])}
    assert keys == {"input:customer=7"}
    # No sticky value: the request id decides, so the draw spreads.
    assert Router(config).key(RouteRequest("r9", inputs={})) == "id:r9"


@pytest.mark.parametrize("bad, message", [
    ({"weights": {"aaaaaaaaaaaa": 60.0, "bbbbbbbbbbbb": 30.0}}, "must sum to 100"),
    ({"weights": {"aaaaaaaaaaaa": 100.0}, "shadows": {"bbbbbbbbbbbb": 10.0}}, "not among the versions"),
    ({"weights": {"aaaaaaaaaaaa": 120.0, "bbbbbbbbbbbb": -20.0}}, "less than or equal to 100"),
    ({"weights": {"a/b": 100.0}}, "not a version name"),
    ({"weights": {"aaaaaaaaaaaa": 100.0}, "generation": -1}, "greater than or equal to 0"),
])
def test_a_bad_traffic_config_names_its_problem(bad, message):
    """Weights off 100 %, stray shadow targets, bad versions and generations are refused, saying why."""
    with pytest.raises(ValidationError, match=message):
        TrafficConfig.model_validate({"model": "m", "generation": 1, **bad})


def test_generations_only_move_forward():
    """A replica switches to a newer generation and ignores an older one that arrives late."""
    old = TrafficConfig.single("m", VERSIONS[0], 4)
    new = TrafficConfig.single("m", VERSIONS[1], 5)
    assert new.supersedes(old) and new.supersedes(None) and not old.supersedes(new) and not old.supersedes(old)
    assert route(RouteRequest("x"), new).generation == 5
