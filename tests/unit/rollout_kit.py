"""Shared makings for the rollout tests: a fake clock, stores acting as named actors, and simulated traffic.

``World`` plays the serving side in-process: every simulated second it routes requests
with the rollout's latest traffic config (the real router), answers them with each
version's behaviour (error rate, latency, agreement with the incumbent), records what
a model server and the shadower would into real ``MemorySignals``, then ticks the
rollout. Nothing here is timed: the clock moves only when the world says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from factory.serve import MemorySignals, MemoryTraffic, RolloutConfig, RolloutSpec, RouteRequest, Router
from factory.settings import Settings
from factory.store import Store

MODEL, ENV = "iris", "prod"
CONTROLLER = "factory-controller"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def store_as(home, actor: str) -> Store:
    """A store on ``home`` acting as ``actor`` (as a process with FACTORY_ACTOR set would)."""
    return Store(home, settings=Settings(home=str(home), actor=actor))


def two_models(store: Store) -> tuple[str, str]:
    """An incumbent serving model/iris/prod and a candidate, as model artifacts."""
    incumbent = store.artifacts.add("model", metadata={"name": MODEL, "v": 1}, name=MODEL).digest
    candidate = store.artifacts.add("model", metadata={"name": MODEL, "v": 2}, name=MODEL).digest
    store.refs.set(f"model/{MODEL}/{ENV}", incumbent, reason="first version")
    return candidate, incumbent


FAST = RolloutConfig(window_s=10, min_requests=50, min_compared=50)


def spec(candidate: str, incumbent: str, config: RolloutConfig = FAST) -> RolloutSpec:
    return RolloutSpec(model=MODEL, env=ENV, candidate=candidate, incumbent=incumbent, p99_bound_ms=100.0,
                       config=config)


@dataclass
class Behaviour:
    """How a version answers: the share of 5xx, its latency in ms, and how often it agrees with the incumbent."""

    error_rate: float = 0.001
    latency_ms: float = 20.0
    agreement: float = 0.98


class World:
    """Simulated serving for one model (see the module)."""

    def __init__(self, clock: Clock, behaviours: dict[str, Behaviour], *, rps: int = 200, seed: int = 0):
        self.clock = clock
        self.behaviours = behaviours
        self.rps = rps
        self.rng = random.Random(seed)
        self.signals = MemorySignals(clock=clock)
        self.traffic = MemoryTraffic()
        self.served: dict[str, int] = {}
        self.user_errors: dict[str, int] = {}
        self.requests = 0
        self.lost = 0

    def _answer(self, version: str) -> tuple[int, float]:
        b = self.behaviours[version]
        code = 500 if self.rng.random() < b.error_rate else 200
        return code, b.latency_ms * self.rng.uniform(0.5, 1.5)

    def second(self) -> None:
        """One second of traffic under the config the replicas follow now."""
        config = self.traffic.current(MODEL)
        router = Router(config)
        now = self.clock()
        for _ in range(self.rps):
            self.requests += 1
            decision = router.route(RouteRequest(f"r{self.requests}"))
            if decision.primary not in self.behaviours:
                self.lost += 1
                continue
            code, latency = self._answer(decision.primary)
            self.signals.record_request(MODEL, decision.primary, code, latency, at=now)
            self.served[decision.primary] = self.served.get(decision.primary, 0) + 1
            if code >= 500:
                self.user_errors[decision.primary] = self.user_errors.get(decision.primary, 0) + 1
            for shadow in decision.shadows:
                shadow_code, shadow_latency = self._answer(shadow)
                self.signals.record_request(MODEL, shadow, shadow_code, shadow_latency, at=now)
                if shadow_code == 200 and code == 200:
                    agreed = int(self.rng.random() < self.behaviours[shadow].agreement)
                    self.signals.record_comparison(MODEL, shadow, agreed={"label": (agreed, 1)}, abs_diff={}, at=now)
        self.clock.advance(1.0)

    def run(self, rollout, seconds: int, until=None) -> None:
        """Serve and tick for up to ``seconds``, stopping early when ``until(rollout)`` holds or it ends."""
        for _ in range(seconds):
            self.second()
            rollout.tick()
            if rollout.state.ended or (until is not None and until(rollout)):
                return
