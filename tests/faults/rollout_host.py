"""A rollout host in its own process, for the kill test: ``python rollout_host.py HOME TRAFFIC CANDIDATE INCUMBENT``.

It hosts the rollout on the real clock, serving simulated requests (a thread routing by
the config it last applied) into in-process signals, and writes every traffic config it
applies as a JSON line to TRAFFIC, which is what the replicas would have followed.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time

from factory.serve import (
    MemorySignals,
    RolloutConfig,
    RolloutSpec,
    RouteRequest,
    Router,
    TrafficConfig,
    drive,
    version_of,
)


class FileTraffic:
    """A ``TrafficControl`` whose replicas are a file: one JSON line per config applied."""

    def __init__(self, path: str):
        self.path = path
        self._current: TrafficConfig | None = None
        configs = self.history()
        if configs:
            self._current = configs[-1]

    def history(self) -> list[TrafficConfig]:
        try:
            with open(self.path) as f:
                return [TrafficConfig.model_validate_json(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def current(self, model: str) -> TrafficConfig | None:
        return self._current

    def apply(self, config: TrafficConfig) -> None:
        if config.supersedes(self._current):
            with open(self.path, "a") as f:
                f.write(config.model_dump_json() + "\n")
                f.flush()
            self._current = config


def _serve(traffic: FileTraffic, signals: MemorySignals, stop: threading.Event) -> None:
    rng = random.Random(0)
    n = 0
    while not stop.is_set():
        config = traffic.current("iris")
        router = Router(config)
        for _ in range(20):
            n += 1
            decision = router.route(RouteRequest(f"r{n}"))
            signals.record_request("iris", decision.primary, 200, rng.uniform(5, 30))
            for shadow in decision.shadows:
                signals.record_request("iris", shadow, 200, rng.uniform(5, 30))
                signals.record_comparison("iris", shadow, agreed={"label": (1, 1)}, abs_diff={})
        time.sleep(0.01)


def main(home: str, traffic_path: str, candidate: str, incumbent: str) -> None:
    from factory.serve import Rollout
    from factory.settings import Settings
    from factory.store import Store

    store = Store(home, settings=Settings(home=home, actor="factory-controller"))
    config = RolloutConfig(window_s=1.0, min_requests=20, min_compared=20)
    spec = RolloutSpec(model="iris", env="prod", candidate=candidate, incumbent=incumbent, p99_bound_ms=100.0,
                       config=config)
    signals = MemorySignals(slot_s=0.1)
    traffic = FileTraffic(traffic_path)
    rollout = Rollout.begin(store, spec, traffic=traffic, signals=signals)
    print(json.dumps({"run": rollout.run.id, "candidate": version_of(candidate)}), flush=True)
    stop = threading.Event()
    threading.Thread(target=_serve, args=(traffic, signals, stop), daemon=True).start()
    drive(rollout, tick_s=0.1)
    stop.set()


if __name__ == "__main__":
    main(*sys.argv[1:5])
