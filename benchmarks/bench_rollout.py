"""Progressive delivery, in-process parts (``bench_canary`` measures them on Ray Serve): what routing, shadows
and rollback decisions cost.

1. Routing a request (90/10 canary, sticky key) against the peer a hand-written router
   would use, ``random.choices`` over the same weights: nanoseconds per decision.
2. The primary's p99 at a fixed moderate load (asyncio, an incumbent taking 2 ms) with a
   100 % shadow to a candidate 10x slower, against the same load with no shadow
   (alternated three times, medians).
3. From the tick that sees a failing analysis to the candidate's traffic at 0 %, with a
   real store (SQLite catalog): the decision part of the issue's "<= 5 s" (``bench_canary``
   measures it end to end, to the replicas).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._util import machine, median, print_table, time_call

INC, CAND = "111111111111", "222222222222"


def _routing(n: int) -> tuple[float, float]:
    from factory.serve import RouteRequest, Router, StickyKey, TrafficConfig

    router = Router(TrafficConfig(model="m", generation=1, weights={INC: 90.0, CAND: 10.0},
                                  sticky=StickyKey(source="header", name="x-user")))
    requests = [RouteRequest(f"r{i}", {"x-user": f"user-{i % 5000}"}) for i in range(n)]
    rng = random.Random(0)
    versions, weights = [INC, CAND], [90.0, 10.0]
    ours = time_call(lambda: [router.route(r) for r in requests], repeat=7)
    peer = time_call(lambda: [rng.choices(versions, weights)[0] for _ in requests], repeat=7)
    return median(ours) / n * 1e9, median(peer) / n * 1e9


def _primary_p99(shadow: bool, rps: int, seconds: float) -> float:
    from factory.serve import Decision, MemorySignals, Shadower, answer

    reply = {"label": [1]}

    async def call(version: str):
        await asyncio.sleep(0.002 if version == INC else 0.020)
        return reply

    async def scenario() -> list[float]:
        shadower = Shadower("m", MemorySignals(), max_in_flight=256)
        decision = Decision(INC, (CAND,) if shadow else (), "k", 1)
        latencies: list[float] = []

        async def one() -> None:
            start = time.perf_counter()
            await answer(decision, call, shadower)
            latencies.append(time.perf_counter() - start)

        tasks = []
        for _ in range(int(rps * seconds)):
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(1 / rps)
        await asyncio.gather(*tasks)
        await shadower.drain(5)
        return latencies

    latencies = asyncio.run(scenario())
    return statistics.quantiles(latencies, n=100)[98] * 1000


def _time_to_zero(repeat: int) -> list[float]:
    from factory.serve import MemorySignals, MemoryTraffic, Rollout, RolloutConfig, RolloutSpec
    from factory.settings import Settings
    from factory.store import Store

    times = []
    for i in range(repeat):
        work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
        try:
            store = Store(work / "home", settings=Settings(home=str(work / "home"), actor="factory-controller"))
            inc = store.artifacts.add("model", metadata={"v": 1}).digest
            cand = store.artifacts.add("model", metadata={"v": 2, "i": i}).digest
            store.refs.set("model/m/prod", inc)
            now = [1_800_000_000.0]
            signals = MemorySignals(clock=lambda: now[0])
            traffic = MemoryTraffic()
            spec = RolloutSpec(model="m", env="prod", candidate=cand, incumbent=inc, p99_bound_ms=100.0,
                               config=RolloutConfig(shadow=False, window_s=10, min_requests=50))
            rollout = Rollout.begin(store, spec, traffic=traffic, signals=signals, clock=lambda: now[0])
            for j in range(200):
                signals.record_request("m", INC, 200, 10.0, at=now[0])
                signals.record_request("m", cand.removeprefix("sha256:")[:12], 500 if j % 3 == 0 else 200, 10.0,
                                       at=now[0])
            now[0] += 10
            seen: list[float] = []
            apply = traffic.apply
            traffic.apply = lambda config: (seen.append(time.perf_counter()), apply(config))  # type: ignore[method-assign]
            start = time.perf_counter()
            rollout.tick()
            assert rollout.state.outcome == "rolled-back"
            times.append(seen[0] - start)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rollouts")
    args = parser.parse_args(argv)
    n, seconds, repeat = (20_000, 1.0, 3) if args.quick else (200_000, 4.0, 9)

    route_ns, peer_ns = _routing(n)
    rounds = [(_primary_p99(False, 200, seconds), _primary_p99(True, 200, seconds)) for _ in range(3)]
    p99_plain, p99_shadow = median([a for a, _ in rounds]), median([b for _, b in rounds])  # alternated: same load
    to_zero = _time_to_zero(repeat)
    print(f"on {machine()}")
    print_table("progressive delivery, in-process (medians)", ["measure", "factory", "peer / baseline", "ratio"], [
        ["route one request (90/10, sticky), ns", route_ns, f"random.choices {peer_ns:.0f}", route_ns / peer_ns],
        ["primary p99 at 200 req/s, ms", f"100 % shadow 10x slower: {p99_shadow:.2f}",
         f"no shadow: {p99_plain:.2f}", p99_shadow / p99_plain],
        ["failing analysis to 0 % (decision), ms", median(to_zero) * 1000, "goal 5000", median(to_zero) / 5],
    ])
    return {"route_ns": route_ns, "random_choices_ns": peer_ns, "p99_no_shadow_ms": p99_plain,
            "p99_shadow_ms": p99_shadow, "to_zero_ms": median(to_zero) * 1000,
            "shadow_p99_ratio": p99_shadow / p99_plain}


if __name__ == "__main__":
    main()
