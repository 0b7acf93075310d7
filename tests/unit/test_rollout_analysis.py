"""The analysis of one stage, the in-process signals it reads, and business outcomes reported by clients."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import InvalidInputError, NotFoundError
from factory.serve import (
    LATENCY_BUCKETS_MS,
    MemorySignals,
    OutcomeBook,
    RolloutConfig,
    Verdict,
    VersionFigures,
    analyse,
    bucket_quantile,
)

CONFIG = RolloutConfig(min_requests=100, min_compared=50, min_outcomes=30)


def _judge(cand: VersionFigures, inc: VersionFigures | None = None, *, complete=True, shadow=False, config=CONFIG):
    return analyse(cand, inc or VersionFigures("inc", requests=1000, errors=0, p99_ms=20.0), config=config,
                   bound_ms=100.0, shadow=shadow, complete=complete)


def _cand(requests=1000, errors=0, p99=20.0, **kw) -> VersionFigures:
    return VersionFigures("cand", requests=requests, errors=errors, p99_ms=p99, **kw)


@pytest.mark.parametrize("requests, errors, inc_errors, verdict", [
    (1000, 1, 0, Verdict.PASS),      # 0.1 % against 0: under the 1 % floor
    (100, 1, 0, Verdict.PASS),       # 1 % on 100 requests: at the floor, not above it
    (100, 3, 0, Verdict.PASS),       # 3 % on 100 requests: above the floor, but 3 errors at 1 % is not unlikely enough
    (100, 30, 0, Verdict.FAIL),      # 30 %: fails
    (1000, 80, 50, Verdict.PASS),    # 8 % against the incumbent's 5 %: within 2x
    (1000, 150, 50, Verdict.FAIL),   # 15 % against 5 %: above 2x, and clearly so
])
def test_error_rate_fails_above_twice_the_incumbent_with_a_floor(requests, errors, inc_errors, verdict):
    """Twice the incumbent's error rate fails, but a handful of errors over few requests never does."""
    analysis = _judge(_cand(requests, errors), VersionFigures("inc", requests=1000, errors=inc_errors, p99_ms=20))
    assert analysis.verdict == verdict, analysis.summary()
    if verdict == Verdict.FAIL:
        assert "error rate" in analysis.summary()


def test_a_p99_above_the_contract_bound_fails_and_one_within_passes():
    """The latency check compares the candidate's p99 with the bound, whatever the incumbent does."""
    assert _judge(_cand(p99=1000.0)).verdict == Verdict.FAIL
    assert "above the bound of 100 ms" in _judge(_cand(p99=1000.0)).summary()
    assert _judge(_cand(p99=99.0)).verdict == Verdict.PASS


def test_the_analysis_waits_for_requests_and_passes_only_on_a_full_window():
    """Too few requests wait; a good window passes only when complete; a bad one fails at once."""
    assert _judge(_cand(requests=99)).verdict == Verdict.WAIT
    assert "99 of 100 requests" in _judge(_cand(requests=99)).summary()
    assert _judge(_cand(), complete=False).verdict == Verdict.WAIT
    assert _judge(_cand(errors=500), complete=False).verdict == Verdict.FAIL


def test_divergence_is_required_in_shadow_and_judged_when_measured():
    """The shadow stage cannot pass without comparisons; disagreement above the threshold fails."""
    assert _judge(_cand(), shadow=True).verdict == Verdict.WAIT
    agreeing = _cand(compared=500, agreement={"label": 0.97}, mean_abs_diff={"score": 0.01})
    assert _judge(agreeing, shadow=True).verdict == Verdict.PASS
    diverging = _cand(compared=500, agreement={"label": 0.7})
    assert _judge(diverging).verdict == Verdict.FAIL and "30.00 % of rows disagree" in _judge(diverging).summary()
    numbers = _cand(compared=500, mean_abs_diff={"score": 0.5})
    limited = CONFIG.model_copy(update={"max_mean_abs_diff": 0.1})
    assert _judge(numbers).verdict == Verdict.PASS and _judge(numbers, config=limited).verdict == Verdict.FAIL


def test_business_outcomes_compare_accuracy_and_error_between_versions():
    """With enough reports, a candidate less accurate (or further off) than the incumbent fails."""
    inc = VersionFigures("inc", requests=1000, p99_ms=20, label_outcomes=100, accuracy=0.90, value_outcomes=100,
                         mean_abs_error=2.0)
    assert _judge(_cand(label_outcomes=100, accuracy=0.89), inc).verdict == Verdict.PASS
    worse = _judge(_cand(label_outcomes=100, accuracy=0.80), inc)
    assert worse.verdict == Verdict.FAIL and "accuracy" in worse.summary()
    assert _judge(_cand(value_outcomes=100, mean_abs_error=3.0), inc).verdict == Verdict.FAIL
    assert _judge(_cand(label_outcomes=10, accuracy=0.1), inc).verdict == Verdict.PASS  # too few reports to judge


def test_bucket_quantile_reads_histograms_as_promql_does():
    """Linear interpolation inside the bucket; a rank in +Inf reads the highest bound; empty is None."""
    bounds = (10.0, 100.0, 1000.0)
    assert bucket_quantile(0.5, bounds, [0, 100, 100, 100]) == pytest.approx(55.0)
    assert bucket_quantile(0.99, bounds, [98, 99, 100, 100]) == pytest.approx(100.0)
    assert bucket_quantile(0.99, bounds, [0, 0, 0, 10]) == 1000.0
    assert bucket_quantile(0.99, bounds, [0, 0, 0, 0]) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.1, 20000), min_size=1, max_size=300), st.sampled_from([10, 50, 100, 250, 1000]))
def test_the_p99_is_above_a_bucket_bound_exactly_when_more_than_1_percent_are(latencies, bound):
    """On a bucket bound, the p99 check is exact: it fails only when over 1 % of requests took longer."""
    signals = MemorySignals(clock=lambda: 0.0)
    for ms in latencies:
        signals.record_request("m", "v", 200, ms, at=5.0)
    p99 = signals.figures("m", ["v"], 0, 10)["v"].p99_ms
    slower = sum(ms > bound for ms in latencies)
    assert (p99 > bound) == (slower > 0.01 * len(latencies))


def test_memory_signals_count_only_their_window_and_forget_past_retention():
    """Figures cover the slots inside [start, end); slots older than the retention are dropped."""
    signals = MemorySignals(clock=lambda: 0.0, retention_s=100)
    for t in (5, 15, 25):
        signals.record_request("m", "v", 200, 3.0, at=t)
    signals.record_request("m", "v", 503, 3.0, at=15)
    signals.record_request("m", "v", 404, 3.0, at=15)  # a client's mistake is not the version's error
    figures = signals.figures("m", ["v", "absent"], 10, 20)
    assert (figures["v"].requests, figures["v"].errors) == (3, 1) and figures["absent"].requests == 0
    signals.record_request("m", "v", 200, 3.0, at=500)
    assert signals.figures("m", ["v"], 0, 100)["v"].requests == 0
    assert LATENCY_BUCKETS_MS[0] == 0.5 and LATENCY_BUCKETS_MS[-1] == 10000


def test_reported_outcomes_score_the_version_that_answered():
    """A client's label or value for a request id scores the version that answered it, row by row."""
    signals = MemorySignals(clock=lambda: 0.0)
    book = OutcomeBook("m", signals, capacity=2)
    book.answered("r1", "cand", {"label": np.array([1, 0])})
    book.answered("r2", "inc", {"label": np.array([[1], [1]])})
    assert book.report(json.dumps({"id": "r1", "label": [1, 1]}).encode())["scores"] == [True, False]
    book.report(b'{"id": "r2", "label": [1, 1]}')
    figures = signals.figures("m", ["cand", "inc"], -1, 1)
    assert (figures["cand"].accuracy, figures["inc"].accuracy) == (0.5, 1.0)
    values = OutcomeBook("m", signals)
    values.answered("r3", "cand", {"eta": np.array([40.0])})
    values.report(b'{"id": "r3", "value": 41.5}')
    assert signals.figures("m", ["cand"], -1, 1)["cand"].mean_abs_error == pytest.approx(1.5)
    book.answered("r4", "cand", {"label": np.array([1])})  # the book holds 2: r1 is forgotten
    with pytest.raises(NotFoundError, match="the last 2"):
        book.report(b'{"id": "r1", "label": 1}')


@pytest.mark.parametrize("body, message", [
    (b"{", "not JSON"),
    (b'{"label": 1}', '"id"'),
    (b'{"id": "r", "label": 1, "value": 2}', "exactly one"),
    (b'{"id": "r", "value": "fast"}', "finite number"),
    (b'{"id": "r", "label": [1, 2]}', "2 labels"),
])
def test_a_bad_outcome_report_says_what_is_wrong(body, message):
    """Malformed reports are refused with a message naming the problem."""
    book = OutcomeBook("m", MemorySignals())
    book.answered("r", "v", {"label": np.array([1])})
    with pytest.raises(InvalidInputError, match=message):
        book.report(body)
