"""Live traffic for the demo: a steady client load, and what the client saw over time.

``Load`` sends single-row requests from a pool of threads at a steady rate, with rows
whose true outcome is known. It only sends: routing, shadow copies and the signals a
rollout is judged on happen in Serve (the ingress splits and mirrors by the deployment
record that the controller's rollout sets; every replica reports to the cluster's signals
collector). What the client saw goes into a per-second timeline (requests, errors and
right answers by the version that answered), which the report draws next to the traffic
weights the rollout recorded: the collector keeps windows for the analysis, not a
history to plot.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Load", "Second"]

log = logging.getLogger(__name__)


@dataclass
class Second:
    """What the client saw in one second: requests, errors and right answers by the version that answered."""

    t: float
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)  # answers that matched the known outcome


class Load:
    """Steady single-row inference traffic against ``url`` (the model's OIP base) from ``workers`` threads."""

    def __init__(self, url: str, model: str, rows: np.ndarray, labels: np.ndarray, *, input_name: str,
                 rate: float = 60.0, workers: int = 4):
        self.url = url.rstrip("/")
        self.model = model
        self.rows = rows.astype(np.float32)
        self.labels = labels
        self.input_name = input_name
        self.rate = rate
        self.workers = workers
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
        self._count(time.time(), version, code >= 500, None if label is None else label == int(self.labels[index]))
        if code == 200:
            ids = self.request_ids.setdefault(version, [])
            if len(ids) < 200:
                ids.append(request_id)

    def _count(self, now: float, version: str, error: bool, correct: bool | None) -> None:
        second = math.floor(now)
        with self._lock:
            self.sent += 1
            self.failed += int(error)
            slot = self._seconds.get(second)
            if slot is None:
                slot = self._seconds[second] = Second(float(second))
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
