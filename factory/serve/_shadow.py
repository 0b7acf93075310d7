"""Shadow copies off the response path: run the candidate on a copy, compare, record, never return.

``Shadower.submit`` is called after the primary version has answered, with the primary's
outputs and a call that runs the shadow target on the same inputs. It starts the call as
a task on the running event loop and returns at once: the primary response never waits
for it, and nothing the shadow does (raise, hang, crawl) reaches the primary. At most
``max_in_flight`` copies run at a time; a copy beyond that is dropped and counted, never
queued, so a slow candidate costs dropped comparisons instead of memory or latency. A
copy that runs past ``timeout_s`` is cancelled and counted as a timeout.

``compare_outputs`` is the comparison: per label output (integers, booleans, strings:
a classification), the rows on which both replies agree; per numeric output, the sum of
absolute differences. An output missing, misshapen or not finite in the shadow's reply
disagrees on every row.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from factory.serve._router import Decision

__all__ = ["Shadower", "ShadowSink", "ShadowStats", "Comparison", "compare_outputs", "answer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """Per label output (agreed rows, rows); per numeric output (sum of |difference|, values)."""

    agreed: dict[str, tuple[int, int]] = field(default_factory=dict)
    abs_diff: dict[str, tuple[float, int]] = field(default_factory=dict)


def _rows(value: np.ndarray) -> int:
    return int(value.shape[0]) if value.ndim else 1


def compare_outputs(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> Comparison:
    """How the shadow's reply differs from the primary's, output by output (see the module)."""
    agreed: dict[str, tuple[int, int]] = {}
    abs_diff: dict[str, tuple[float, int]] = {}
    for name, value in primary.items():
        want = np.asarray(value)
        rows = _rows(want)
        got = shadow.get(name)
        got = None if got is None else np.asarray(got)
        if got is None or got.shape != want.shape:
            agreed[name] = (0, rows)
            continue
        if want.dtype.kind in "fc" and got.dtype.kind in "fciub":
            diff = np.abs(want.astype(np.float64) - got.astype(np.float64))
            diff[np.isnan(want) & np.isnan(got)] = 0.0  # both NaN: the same answer
            if not np.isfinite(diff).all():
                agreed[name] = (0, rows)
                continue
            abs_diff[name] = (float(diff.sum()), int(diff.size))
        else:
            same = want == got
            same = same.reshape(rows, -1).all(axis=1) if want.ndim > 1 else np.atleast_1d(same)
            agreed[name] = (int(same.sum()), rows)
    return Comparison(agreed, abs_diff)


class ShadowSink(Protocol):
    """Where shadow results go: ``MemorySignals`` in-process, the model server's recorder in a replica."""

    def record_request(self, model: str, version: str, code: int, latency_ms: float) -> None: ...

    def record_comparison(self, model: str, version: str, *, agreed: Mapping[str, tuple[int, int]],
                          abs_diff: Mapping[str, tuple[float, int]]) -> None: ...


@dataclass
class ShadowStats:
    """What happened to the copies submitted so far."""

    submitted: int = 0
    dropped: int = 0
    compared: int = 0
    failed: int = 0
    timed_out: int = 0


Outputs = Mapping[str, Any]


class Shadower:
    """Runs shadow copies for one served model, at most ``max_in_flight`` at a time (see the module).

    ``record_requests``: also record each copy's status and latency under its version
    (leave it off where the shadow call goes through a path that records them itself).
    ``submit`` must be called from the event loop's own thread.
    """

    def __init__(self, model: str, sink: ShadowSink, *, max_in_flight: int = 32, timeout_s: float = 10.0,
                 record_requests: bool = True, clock: Callable[[], float] = time.perf_counter):
        if max_in_flight < 1 or timeout_s <= 0:
            raise ValueError(f"max_in_flight ({max_in_flight}) must be >= 1 and timeout_s ({timeout_s}) > 0")
        self.model = model
        self.sink = sink
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.record_requests = record_requests
        self.stats = ShadowStats()
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, version: str, call: Callable[[], Awaitable[Outputs]], primary: Outputs) -> bool:
        """Start a shadow copy on ``version``; False when it was dropped. Never raises, never waits."""
        try:
            self.stats.submitted += 1
            if len(self._tasks) >= self.max_in_flight:
                self.stats.dropped += 1
                return False
            task = asyncio.get_running_loop().create_task(self._shadow(version, call, primary))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        except Exception:  # no running loop, a call that cannot even start: the primary goes on
            self.stats.failed += 1
            log.exception("could not start a shadow copy on %s of %s", version, self.model)
            return False

    async def _shadow(self, version: str, call: Callable[[], Awaitable[Outputs]], primary: Outputs) -> None:
        start = self._clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                outputs = await call()
        except TimeoutError:
            self.stats.timed_out += 1
            self._record(version, 504, start)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.failed += 1
            log.debug("shadow copy on %s of %s failed: %s", version, self.model, exc)
            self._record(version, 500, start)
            return
        self._record(version, 200, start)
        try:
            comparison = compare_outputs(primary, outputs)
            self.sink.record_comparison(self.model, version, agreed=comparison.agreed, abs_diff=comparison.abs_diff)
            self.stats.compared += 1
        except Exception:
            self.stats.failed += 1
            log.exception("could not compare the shadow reply of %s on %s", self.model, version)

    def _record(self, version: str, code: int, start: float) -> None:
        if self.record_requests:
            try:
                self.sink.record_request(self.model, version, code, (self._clock() - start) * 1000)
            except Exception:
                log.exception("could not record a shadow request of %s on %s", self.model, version)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the copies in flight (up to ``timeout_s``), then cancel what is left."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, left = await asyncio.wait(pending, timeout=timeout_s)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)


async def answer(decision: Decision, call: Callable[[str], Awaitable[Outputs]], shadower: Shadower | None) -> Outputs:
    """What an ingress does with a routing decision: the primary answers, then its shadows are submitted.

    ``call(version)`` runs the request on one version. The primary's outputs come back
    as soon as it answered; shadow copies are started, never awaited.
    """
    outputs = await call(decision.primary)
    if shadower is not None:
        for version in decision.shadows:
            shadower.submit(version, functools.partial(call, version), outputs)
    return outputs
