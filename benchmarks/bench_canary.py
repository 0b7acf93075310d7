"""Progressive delivery on a real Ray Serve: what the router, shadows and rollback cost the model servers.

One run, one machine, one client (``benchmarks/_loadgen.py`` in its own process), the
same one-row JSON ``infer`` request, every replica on the same fractional CPU:

1. Canary: a model server holding two versions with a 90/10 split (the router runs in
   the ingress replica, no extra hop), against the same model deployed alone. p50 at
   one connection, requests/s at ``--connections``; targets alternate over rounds.
2. Shadow: the primary's p99 at a fixed moderate load (``--rate`` requests/s), with a
   100 % shadow to a candidate sleeping 10x the incumbent's median latency, against the
   same server and load with no shadow (switched on and off between rounds).
3. Rollback: a rollout (hosted in this process, reading the cluster's signals
   collector) of a candidate failing half its requests at a 20 % canary; from the end
   of the analysis window that fails it to the last answer a client got from the
   candidate, and from the first error a client saw to that last answer.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._serving import (
    admitted,
    body_file,
    load,
    local_serve,
    own_keys,
    package,
    use_plugins,
    wait,
)
from benchmarks._util import machine, median, print_table

CPUS = 0.25
CONTROLLER = "factory-controller"


def _split(store, name: str, weights: dict[str, float], shadows: dict[str, float], held: tuple[str, ...]) -> None:
    """Set ``name``'s traffic (a new generation) and wait until the replica follows it (it polls every 0.25 s)."""
    from factory.serve import TrafficConfig, read_record, set_traffic

    record, _ = read_record(store, name)
    generation = (record.traffic.generation if record.traffic else 0) + 1
    set_traffic(store, name, TrafficConfig(model=record.model, generation=generation, weights=weights,
                                           shadows=shadows), versions=held, reason="benchmark")
    time.sleep(1.5)


def _canary(store, body: Path, rounds: int, seconds: float, connections: int) -> dict[str, dict]:
    from factory.serve import deploy, version_of

    direct = package(store, "direct", cpus=CPUS)
    incumbent = package(store, "canary", cpus=CPUS)  # the same weights as "direct"
    candidate = package(store, "canary", cpus=CPUS, seed=1)
    targets = {"direct": deploy(store, admitted(store, direct.digest), "dev").url + "/infer",
               "router 90/10": deploy(store, admitted(store, incumbent.digest), "dev").url + "/infer"}
    _split(store, "canary", {version_of(incumbent.digest): 90.0, version_of(admitted(store, candidate.digest)): 10.0},
           {}, (candidate.digest,))
    for url in targets.values():
        wait(url, body.read_bytes())
    latency: dict[str, list[dict]] = {name: [] for name in targets}
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            latency[name].append(load(targets[name], body, 1, seconds))
            runs[name].append(load(targets[name], body, connections, seconds))
    return {name: {"p50_ms": median([x["p50_ms"] for x in latency[name]]),
                   "rps": median([x["rps"] for x in runs[name]]),
                   "errors": sum(x["errors"] for x in latency[name] + runs[name])} for name in targets}


def _shadow(store, body: Path, rounds: int, seconds: float, rate: float) -> dict[str, float]:
    from factory.serve import deploy, version_of

    fast = package(store, "shadowed", cpus=CPUS)
    url = deploy(store, admitted(store, fast.digest), "dev").url + "/infer"
    wait(url, body.read_bytes())
    alone = load(url, body, 1, seconds)["p50_ms"]
    sleep_ms = round(10 * alone, 1)
    slow = package(store, "shadowed", cpus=CPUS, architecture="faulty-classifier", sleep_ms=sleep_ms)
    v_fast, v_slow = version_of(fast.digest), version_of(admitted(store, slow.digest))
    p99: dict[bool, list[float]] = {False: [], True: []}
    errors = 0
    for r in range(2 * rounds):
        shadow = r % 2 == 0
        _split(store, "shadowed", {v_fast: 100.0, v_slow: 0.0}, {v_slow: 100.0} if shadow else {}, (slow.digest,))
        run = load(url, body, 4, seconds, rate=rate)
        p99[shadow].append(run["p99_ms"])
        errors += run["errors"]
    return {"incumbent_p50_ms": alone, "candidate_sleep_ms": sleep_ms, "p99_shadow_ms": median(p99[True]),
            "p99_plain_ms": median(p99[False]), "errors": errors}


class _Client(threading.Thread):
    """Posts the infer body back to back, keeping (answered at, status, version) of every answer."""

    def __init__(self, url: str, body: bytes):
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.answers: list[tuple[float, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=30, headers={"content-type": "application/json"}) as http:
            while not self.stop.is_set():
                try:
                    reply = http.post(self.url, content=self.body)
                    version = reply.json().get("model_version", "") if reply.status_code == 200 else ""
                    self.answers.append((time.time(), reply.status_code, version))
                except httpx.HTTPError:
                    self.answers.append((time.time(), 0, ""))


def _rollback(store, body: Path, repeat: int) -> list[dict[str, float]]:
    from factory.serve import RolloutConfig, deploy, drive, start_rollout, version_of

    incumbent = package(store, "failing", cpus=CPUS)
    candidate = package(store, "failing", cpus=CPUS, architecture="faulty-classifier", fail_rate=0.5)
    url = deploy(store, admitted(store, incumbent.digest), "dev").url + "/infer"
    admitted(store, candidate.digest)
    wait(url, body.read_bytes())
    v_candidate = version_of(candidate.digest)
    config = RolloutConfig(shadow=False, steps=(20.0, 100.0), window_s=2.0, min_requests=10, p99_latency_ms=10_000.0)
    out = []
    for _ in range(repeat):
        client = _Client(url, body.read_bytes())
        client.start()
        rollout = start_rollout(store, candidate.digest, "dev", config)
        drive(rollout, tick_s=0.1, stop=_timer(120.0))
        done = next(e.details for e in rollout.run.events() if e.details.get("event") == "rolled-back")
        window_end = done["analysis"]["end"]
        time.sleep(3.0)  # answers after the rollback
        client.stop.set()
        client.join(30)
        served = [at for at, status, version in client.answers if version == v_candidate]
        last = max(served, default=window_end)
        first_error = min((at for at, status, _ in client.answers if status >= 500), default=last)
        out.append({"window_end_to_zero_s": max(0.0, last - window_end), "first_error_to_zero_s": last - first_error})
    return out


def _timer(seconds: float) -> threading.Event:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    timer.start()
    return stop


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s and one rollback")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per target and round")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections for throughput")
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s of the fixed load for shadows")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    repeat = 1 if args.quick else 3

    from factory.settings import Settings
    from factory.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-canary-"))
    own_keys(work)
    use_plugins()
    try:
        with local_serve():
            home = str(work / "home")
            store = Store(home, settings=Settings(home=home, actor=CONTROLLER))
            body = body_file(work)
            canary = _canary(store, body, rounds, seconds, args.connections)
            shadow = _shadow(store, body, rounds, seconds, args.rate)
            rollback = _rollback(store, body, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    direct, routed = canary["direct"], canary["router 90/10"]
    to_zero = median([r["window_end_to_zero_s"] for r in rollback])
    from_error = median([r["first_error_to_zero_s"] for r in rollback])
    print(f"one-row JSON infer of an MLP (16 features, hidden 64x64), {CPUS} CPU per replica, {rounds} rounds of "
          f"{seconds:.0f} s, on {machine()}")
    print_table("progressive delivery on Ray Serve (medians)", ["measure", "factory", "peer / baseline", "ratio"], [
        ["p50 ms, 1 connection", f"router 90/10: {routed['p50_ms']:.2f}", f"direct: {direct['p50_ms']:.2f}",
         routed["p50_ms"] / direct["p50_ms"]],
        [f"req/s, {args.connections} connections", f"router 90/10: {routed['rps']:.0f}",
         f"direct: {direct['rps']:.0f}", routed["rps"] / direct["rps"]],
        [f"primary p99 ms at {args.rate:.0f} req/s", f"100 % shadow sleeping {shadow['candidate_sleep_ms']:.1f} ms: "
         f"{shadow['p99_shadow_ms']:.2f}", f"no shadow: {shadow['p99_plain_ms']:.2f}",
         shadow["p99_shadow_ms"] / shadow["p99_plain_ms"]],
        ["end of the failing window to the candidate's last answer, s", to_zero, "goal 5", to_zero / 5],
        ["first client error to the candidate's last answer, s", from_error, "", ""],
    ])
    figures = {
        "p50_ratio_router_vs_direct": routed["p50_ms"] / direct["p50_ms"],
        "throughput_ratio_router_vs_direct": routed["rps"] / direct["rps"],
        "shadow_p99_ratio": shadow["p99_shadow_ms"] / shadow["p99_plain_ms"],
        "to_zero_s": to_zero,
    }
    print(f"errors: canary {direct['errors'] + routed['errors']}, shadow {shadow['errors']}")
    print(f"end of the failing analysis window to 0 % candidate traffic: {to_zero:.2f} s (goal <= 5 s); "
          f"first client error to 0 %: {from_error:.2f} s")
    print(f"100 % shadow to a 10x slower candidate, primary p99: {figures['shadow_p99_ratio']:.2f}x (goal <= 1.05x)")
    print(f"router 90/10 vs direct: p50 {figures['p50_ratio_router_vs_direct']:.2f}x (goal <= 1.15x), "
          f"throughput {figures['throughput_ratio_router_vs_direct']:.2f}x (goal >= 0.85x)")
    return {**{f"{k}[direct]": v for k, v in direct.items()}, **{f"{k}[router]": v for k, v in routed.items()},
            **shadow, **figures, "first_error_to_zero_s": from_error}


if __name__ == "__main__":
    main()
