"""Live traffic for the demo: a steady client load, the traffic seam, and what both saw over time.

``StoreTraffic`` is the rollout's ``TrafficControl`` over a real deployment: each config
it applies becomes the deployment record's split (``factory.serve.set_traffic``), which
every replica follows within its poll interval, without a restart. The record holds
weights only, so the shadow share of a config is carried out by the client here:
``Load`` copies that share of the requests answered by the incumbent to the candidate's
versioned endpoint and compares the labels (shadowing as a mirroring ingress would).

``Load`` sends single-row requests from a pool of threads at a steady rate, with rows
whose true outcome is known, and feeds ``MemorySignals`` with what each version
answered: status and latency, and the shadow agreement. Whether each answer was right
goes only into the per-second timeline (requests, errors and right answers by version,
the weights in force) that the report draws: the analysis's business check compares
accuracies without a significance test, so the few dozen outcomes of a demo-sized window
would roll back a good candidate by chance.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from factory.serve import MemorySignals, TrafficConfig, set_traffic, version_of

__all__ = ["StoreTraffic", "Load", "Second"]

log = logging.getLogger(__name__)


class StoreTraffic:
    """The rollout's traffic seam over deployment ``name``; remembers every config it applied, with its time."""

    def __init__(self, store, name: str, packages: Sequence[str]):
        self.store = store
        self.name = name
        self._digests = {version_of(d): d for d in packages}
        self._lock = threading.Lock()
        self._current: dict[str, TrafficConfig] = {}
        self.applied: list[tuple[float, TrafficConfig]] = []

    def add(self, *packages: str) -> None:
        """Let configs name these packages' versions too (the next rollout's candidate)."""
        self._digests.update({version_of(d): d for d in packages})

    def current(self, model: str) -> TrafficConfig | None:
        with self._lock:
            return self._current.get(model)

    def apply(self, config: TrafficConfig) -> None:
        with self._lock:
            if not config.supersedes(self._current.get(config.model)):
                return
        weights = {v: w for v, w in config.weights.items() if w > 0}
        held = tuple(self._digests[v] for v in config.weights if v in self._digests)
        set_traffic(self.store, self.name, weights, versions=held, reason=f"rollout generation {config.generation}")
        with self._lock:
            self._current[config.model] = config
            self.applied.append((time.time(), config))


@dataclass
class Second:
    """What the client saw in one second: requests and errors by version, and the weights then in force."""

    t: float
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)  # answers that matched the known outcome
    weights: dict[str, float] = field(default_factory=dict)
    shadows: dict[str, float] = field(default_factory=dict)


class Load:
    """Steady single-row inference traffic against ``url`` (the model's OIP base) from ``workers`` threads."""

    def __init__(self, url: str, model: str, rows: np.ndarray, labels: np.ndarray, *, input_name: str,
                 signals: MemorySignals, traffic: StoreTraffic | None = None, rate: float = 60.0, workers: int = 4,
                 seed: int = 0):
        self.url = url.rstrip("/")
        self.model = model
        self.rows = rows.astype(np.float32)
        self.labels = labels
        self.input_name = input_name
        self.signals = signals
        self.traffic = traffic
        self.rate = rate
        self.workers = workers
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._seconds: dict[int, Second] = {}
        self._counter = itertools.count()
        self.request_ids: dict[str, list[str]] = {}  # by version that answered: a few ids to trace
        self.sent = 0
        self.failed = 0

    # -- running -----------------------------------------------------------------------
    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        interval = self.workers / self.rate
        for i in range(self.workers):
            thread = threading.Thread(target=self._loop, args=(interval, i), name=f"demo-load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def _loop(self, interval: float, worker: int) -> None:
        import httpx

        with httpx.Client(timeout=30.0) as http:
            next_at = time.monotonic() + worker * interval / self.workers
            while not self._stop.is_set():
                self._one(http)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()  # behind: do not burst to catch up

    def _body(self, index: int, request_id: str) -> dict:
        row = self.rows[index]
        return {"id": request_id, "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [1, row.size],
                                              "data": row.tolist()}]}

    def _one(self, http) -> None:
        index = next(self._counter) % len(self.rows)
        request_id = f"demo-{uuid.uuid4().hex[:16]}"
        body = self._body(index, request_id)
        started = time.perf_counter()
        version, label, code = "unknown", None, 599
        try:
            reply = http.post(f"{self.url}/infer", json=body)
            code = reply.status_code
            if code == 200:
                data = reply.json()
                version = data.get("model_version", "unknown")
                label = _label(data)
        except Exception as exc:  # a connection refused or reset is an error the client saw
            log.debug("request %s failed: %s", request_id, exc)
        latency_ms = (time.perf_counter() - started) * 1000.0
        now = time.time()
        self.signals.record_request(self.model, version, code, latency_ms, at=now)
        self._count(now, version, code >= 500, None if label is None else label == int(self.labels[index]))
        if code == 200:
            ids = self.request_ids.setdefault(version, [])
            if len(ids) < 200:
                ids.append(request_id)
            self._shadow(http, body, version, label, now)

    def _shadow(self, http, body: dict, answered: str, label: int | None, now: float) -> None:
        config = self.traffic.current(self.model) if self.traffic is not None else None
        if config is None or label is None:
            return
        for version, percent in config.shadows.items():
            if version == answered or self._rng.random() * 100.0 >= percent:
                continue
            started = time.perf_counter()
            try:
                reply = http.post(f"{self.url}/versions/{version}/infer", json={**body, "id": body["id"] + "-shadow"})
            except Exception:
                self.signals.record_request(self.model, version, 599, (time.perf_counter() - started) * 1000.0, at=now)
                continue
            self.signals.record_request(self.model, version, reply.status_code,
                                        (time.perf_counter() - started) * 1000.0, at=now)
            if reply.status_code == 200:
                theirs = _label(reply.json())
                self.signals.record_comparison(self.model, version, agreed={"label": (int(theirs == label), 1)},
                                               abs_diff={}, at=now)

    def _count(self, now: float, version: str, error: bool, correct: bool | None) -> None:
        second = math.floor(now)
        config = self.traffic.current(self.model) if self.traffic is not None else None
        with self._lock:
            self.sent += 1
            self.failed += int(error)
            slot = self._seconds.get(second)
            if slot is None:
                slot = self._seconds[second] = Second(float(second))
                if config is not None:
                    slot.weights = dict(config.weights)
                    slot.shadows = dict(config.shadows)
            slot.requests[version] = slot.requests.get(version, 0) + 1
            slot.errors[version] = slot.errors.get(version, 0) + int(error)
            if correct is not None:
                slot.correct[version] = slot.correct.get(version, 0) + int(correct)

    def timeline(self, start: float | None = None, end: float | None = None) -> list[Second]:
        """The seconds seen between ``start`` and ``end`` (epoch seconds), in order."""
        with self._lock:
            seconds = sorted(self._seconds.values(), key=lambda s: s.t)
        return [s for s in seconds if (start is None or s.t >= math.floor(start)) and (end is None or s.t <= end)]


def _label(reply: Mapping) -> int | None:
    for output in reply.get("outputs", ()):
        if output.get("name") == "label":
            data = output.get("data") or [None]
            return None if data[0] is None else int(data[0])
    return None
