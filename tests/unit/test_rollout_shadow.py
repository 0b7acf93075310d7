"""Shadow copies run off the response path: they can never change, fail or hold up the primary answer."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from factory.serve import Decision, MemorySignals, Shadower, answer, compare_outputs

INC, CAND = "111111111111", "222222222222"
REPLY = {"label": np.array([1, 0, 1]), "score": np.array([[0.9], [0.2], [0.7]], dtype=np.float32)}
DECISION = Decision(INC, (CAND,), "id:r1", 1)
T = [1000.0]


def _signals() -> MemorySignals:
    return MemorySignals(clock=lambda: T[0])


def _models(candidate):
    async def incumbent(version):
        return REPLY

    async def call(version):
        return await (incumbent(version) if version == INC else candidate())

    return call


@pytest.mark.parametrize("behaviour", ["raises", "hangs", "crawls"])
def test_a_shadow_that_raises_hangs_or_crawls_never_changes_or_holds_up_the_primary(behaviour):
    """The client gets the incumbent's reply at once, while the candidate's copy is still running or failing."""
    signals = _signals()

    async def scenario():
        gate = asyncio.Event()

        async def candidate():
            if behaviour == "raises":
                raise RuntimeError("candidate exploded")
            await gate.wait()  # hangs until released: never, or after the primary answered ("10x slower")
            return REPLY

        shadower = Shadower("m", signals, timeout_s=0.2 if behaviour == "hangs" else 30)
        reply = await answer(DECISION, _models(candidate), shadower)
        in_flight_when_answered = shadower.in_flight
        if behaviour == "crawls":
            gate.set()
        await shadower.drain(5)
        return reply, in_flight_when_answered, shadower.stats

    reply, in_flight, stats = asyncio.run(scenario())
    assert reply is REPLY
    assert in_flight == 1  # the primary answered with its shadow still outstanding: it never waited for it
    assert stats.submitted == 1 and stats.dropped == 0
    figures = signals.figures("m", [CAND], 0, 2000)[CAND]
    if behaviour == "raises":
        assert stats.failed == 1 and figures.errors == 1 and figures.compared == 0
    elif behaviour == "hangs":
        assert stats.timed_out == 1 and figures.errors == 1
    else:
        assert stats.compared == 1 and figures.compared == 1 and figures.agreement == {"label": 1.0}
        assert figures.mean_abs_diff == {"score": 0.0} and figures.errors == 0


def test_shadows_beyond_the_bound_are_dropped_and_counted_not_queued():
    """Under back-pressure copies are dropped at once; every primary answer still comes back."""
    signals = _signals()

    async def scenario():
        gate = asyncio.Event()

        async def candidate():
            await gate.wait()
            return REPLY

        shadower = Shadower("m", signals, max_in_flight=3)
        replies = [await answer(DECISION, _models(candidate), shadower) for _ in range(10)]
        in_flight, dropped = shadower.in_flight, shadower.stats.dropped
        gate.set()
        await shadower.drain(5)
        accepted_after = shadower.submit(CAND, candidate, REPLY)
        await shadower.drain(5)
        return replies, in_flight, dropped, shadower.stats, accepted_after

    replies, in_flight, dropped, stats, accepted_after = asyncio.run(scenario())
    assert all(r is REPLY for r in replies)
    assert (in_flight, dropped) == (3, 7)
    assert stats.compared == 4 and accepted_after  # room again once the slow copies finished


def test_a_failing_sink_or_no_event_loop_never_reaches_the_caller():
    """Recording that breaks, or a submit with no loop running, is counted and swallowed."""

    class Broken:
        def record_request(self, *args, **kwargs):
            raise OSError("disk full")

        def record_comparison(self, *args, **kwargs):
            raise OSError("disk full")

    async def candidate():
        return REPLY

    async def scenario():
        shadower = Shadower("m", Broken())
        reply = await answer(DECISION, _models(candidate), shadower)
        await shadower.drain(5)
        return reply, shadower.stats

    reply, stats = asyncio.run(scenario())
    assert reply is REPLY and stats.failed == 1 and stats.compared == 0
    outside = Shadower("m", _signals())
    assert outside.submit(CAND, candidate, REPLY) is False and outside.stats.failed == 1


def test_comparison_counts_agreeing_rows_and_absolute_differences():
    """Labels agree row by row; numbers differ by their mean absolute difference; a missing output disagrees."""
    shadow = {"label": np.array([1, 1, 1]), "score": np.array([[1.0], [0.2], [0.4]])}
    comparison = compare_outputs(REPLY, shadow)
    assert comparison.agreed == {"label": (2, 3)}
    total, values = comparison.abs_diff["score"]
    assert values == 3 and total == pytest.approx(0.1 + 0.0 + 0.3, abs=1e-6)
    broken = compare_outputs(REPLY, {"label": np.array([1, 0]), "score": np.array([[np.nan], [0.2], [0.7]])})
    assert broken.agreed == {"label": (0, 3), "score": (0, 3)} and broken.abs_diff == {}
    assert compare_outputs({"name": np.array([["a", "b"], ["c", "d"]])},
                           {"name": np.array([["a", "b"], ["c", "x"]])}).agreed == {"name": (1, 2)}
