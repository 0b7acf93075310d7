"""The model server's logic, without Ray: one served model, several versions, OIP in and out.

``ModelServer.handle`` takes a request as (method, path, headers, body) and returns a
``Reply``. It routes to a version (the one named, else the router's decision under the
traffic config in force, else the environment's), checks the body with
``factory.contract.parse_request`` against that version's contract, runs it (through
``serve.batch`` in a replica), answers, then hands shadow copies to the ``Shadower``
(off the response path), remembers the answer for outcome reports, samples the request
into the inference log and records metrics. ``POST /v2/models/{name}/outcomes`` takes a
client's observed outcome for a request id. Bad input is a 4xx naming the problem;
nothing a client sends can raise out of ``handle``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from factory.contract import parse_request
from factory.errors import InvalidInputError, InvalidRequestError, NotFoundError
from factory.serve._batching import Job, run_jobs
from factory.serve._log import LogRecord
from factory.serve._outcomes import MAX_REPORT_BYTES
from factory.serve._router import RouteRequest
from factory.serve._shadow import answer
from factory.serve._oip import (
    HEADER_LENGTH,
    Reply,
    decode_body,
    error_reply,
    infer_reply,
    json_reply,
    parse_route,
)

if TYPE_CHECKING:
    import numpy as np

    from factory.contract import InferenceRequest
    from factory.serve._log import InferenceLog
    from factory.serve._metrics import ServeMetrics
    from factory.serve._outcomes import OutcomeBook
    from factory.serve._record import ServeState
    from factory.serve._router import Decision
    from factory.serve._shadow import Shadower
    from factory.serve._versions import LoadedVersion, Routing, VersionPool

__all__ = ["ModelServer", "ROUTE_KEY", "APPLY_FAILED"]

log = logging.getLogger(__name__)

# A client that sends the same key gets the same version while the weights stay (sticky routing).
ROUTE_KEY = "x-factory-route-key"
APPLY_FAILED = "this replica could not apply the deployment's latest state"
Outputs = dict[str, "np.ndarray"]
Run = Callable[[Job], Awaitable["Outputs | BaseException"]]


class ModelServer:
    """Serves the versions of one model under ``name`` (the OIP model name).

    ``run`` runs the answering version's request (a replica batches it); ``shadow_run``
    runs a shadow copy, off the event loop (default: in a worker thread). ``shadower``
    and ``outcomes`` are optional: without them no copy is made and no outcome taken.
    """

    def __init__(self, name: str, *, pool: VersionPool, metrics: ServeMetrics, log: InferenceLog | None = None,
                 max_body_bytes: int = 16 * 2**20, run: Run | None = None, shadow_run: Run | None = None,
                 shadower: Shadower | None = None, outcomes: OutcomeBook | None = None,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.perf_counter,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.name = name
        self.pool = pool
        self.metrics = metrics
        self.log = log
        self.max_body_bytes = max_body_bytes
        self.shadower = shadower
        self.outcomes = outcomes
        self._run = run or self._run_alone
        self._shadow_run = shadow_run or self._run_in_thread
        self._rng = rng or random.Random()
        self._clock = clock
        self._now = now
        self._routing: Routing | None = None
        self.apply_error: str | None = None  # why the latest deployment state could not be applied, if it could not

    @property
    def routing(self) -> Routing | None:
        return self._routing

    def apply(self, state: ServeState) -> Routing:
        """Serve ``state`` from now on: load what it adds, then switch every new request to it at once."""
        traffic = state.traffic()
        routing = self.pool.routing(state.primary, state.extra, traffic)
        self._routing = routing
        log.info("serving %s: primary %s, versions %s, traffic %s", self.name, routing.primary,
                 sorted(routing.versions), "-" if traffic is None else
                 f"generation {traffic.generation} {dict(traffic.weights)} shadows {dict(traffic.shadows)}")
        return routing

    def run_batch(self, jobs: Sequence[Job]) -> list[Outputs | BaseException]:
        """Run requests that arrived together; record rows per version."""
        rows: dict[str, int] = {}
        for job in jobs:
            rows[job.version.version] = rows.get(job.version.version, 0) + job.rows
        for version, count in rows.items():
            self.metrics.batch(version, count)
        return run_jobs(jobs)

    async def _run_alone(self, job: Job) -> Outputs | BaseException:
        return self.run_batch([job])[0]

    async def _run_in_thread(self, job: Job) -> Outputs | BaseException:
        import asyncio

        return (await asyncio.to_thread(run_jobs, [job]))[0]

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                     request_id: str) -> Reply:
        """Answer one HTTP request to this model's paths. ``headers`` are keyed in lowercase."""
        start = self._clock()
        version = ""
        reply: Reply
        try:
            route = parse_route(path)
            routing = self._routing
            if route is None or route.model != self.name:
                reply = error_reply(404, f"no such endpoint {path!r}: model {self.name!r} answers "
                                         f"/v2/models/{self.name}[/versions/V][/ready|/infer] and /v2/models/{self.name}/outcomes",
                                    request_id)
            elif routing is None:
                reply = error_reply(503, f"model {self.name!r} is still loading: retry shortly", request_id)
            elif route.verb == "outcomes":
                reply = self._outcome(route.version, method, body, request_id)
            elif route.verb == "infer":
                if method != "POST":
                    reply = _method_not_allowed("POST", method, request_id)
                else:
                    loaded, request, decision = self._route(routing, route.version, headers, body, request_id)
                    version = loaded.version
                    request_id = request.id or request_id  # from here on, errors echo the client's id
                    reply = await self._answer(routing, loaded, request, decision, headers, body, request_id, start)
            elif method != "GET":
                reply = _method_not_allowed("GET", method, request_id)
            else:
                loaded = routing.get(route.version or routing.primary)
                if route.verb == "ready":
                    reply = json_reply(200, {"name": self.name, "version": loaded.version, "ready": True})
                else:
                    meta = loaded.contract.oip_metadata(sorted(routing.versions))
                    reply = json_reply(200, {**meta, "name": self.name})
        except InvalidRequestError as exc:
            reply = error_reply(exc.status, str(exc), request_id)
        except NotFoundError as exc:
            note = f"; {APPLY_FAILED}: {self.apply_error}" if self.apply_error else ""
            reply = error_reply(404, f"{exc}{note}", request_id)
        except Exception as exc:  # the model or the server failed on valid input: 500, and the replica lives on
            log.exception("request %s to %s failed", request_id, self.name)
            reply = error_reply(500, f"the model server failed on this request ({type(exc).__name__}: {exc})",
                                request_id)
        self.metrics.request(version, reply.status, (self._clock() - start) * 1000)
        return reply

    def reject(self, exc: InvalidRequestError, request_id: str) -> Reply:
        """The reply to a request refused before it reached ``handle`` (a body over the limit)."""
        reply = error_reply(exc.status, str(exc), request_id)
        self.metrics.request("", reply.status, 0.0)
        return reply

    def _route(self, routing: Routing, named: str | None, headers: Mapping[str, str], body: bytes,
               request_id: str) -> tuple[LoadedVersion, InferenceRequest, Decision | None]:
        """The version that answers, the request checked against its contract, and the routing decision.

        A request naming a version gets it. Otherwise the router decides on the routing key
        (the ``x-factory-route-key`` header, else the request id; or the sticky key of the
        traffic config); a config sticky on an input is decided on the body as the
        environment's version reads it.
        """
        if named is not None:
            loaded = routing.get(named)
            return loaded, self._parse(loaded, headers, body), None
        key = headers.get(ROUTE_KEY) or request_id
        sticky = routing.sticky_input
        if sticky is None:
            decision = routing.decide(RouteRequest(key, headers))
            loaded = routing.get(decision.primary)
            return loaded, self._parse(loaded, headers, body), decision
        primary = routing.get(routing.primary)
        request = self._parse(primary, headers, body)
        decision = routing.decide(RouteRequest(key, headers, request.inputs))
        loaded = routing.get(decision.primary)
        if loaded.contract.inputs != primary.contract.inputs:
            request = self._parse(loaded, headers, body)
        return loaded, request, decision

    def _parse(self, loaded: LoadedVersion, headers: Mapping[str, str], body: bytes) -> InferenceRequest:
        header_length = headers.get(HEADER_LENGTH)
        try:
            length = None if header_length is None else int(header_length)
        except ValueError:
            raise InvalidRequestError(f"Inference-Header-Content-Length is {header_length!r}: give the JSON "
                                      "header's length in bytes") from None
        body = decode_body(body, headers.get("content-encoding"), self.max_body_bytes)
        return parse_request(loaded.contract, body, header_length=length, max_body_bytes=self.max_body_bytes)

    async def _answer(self, routing: Routing, loaded: LoadedVersion, request: InferenceRequest,
                      decision: Decision | None, headers: Mapping[str, str], body: bytes, request_id: str,
                      start: float) -> Reply:
        async def call(version: str) -> Outputs:
            if version == loaded.version:
                outputs = await self._run(Job(loaded, request.inputs, request.rows))
            else:  # a shadow copy: its own version's contract, off the event loop
                target = routing.get(version)
                inputs = request.inputs if target.contract.inputs == loaded.contract.inputs else \
                    self._parse(target, headers, body).inputs
                outputs = await self._shadow_run(Job(target, inputs, request.rows))
            if isinstance(outputs, BaseException):
                raise outputs
            return outputs

        if decision is not None and decision.shadows and self.shadower is not None:
            outputs = await answer(decision, call, self.shadower)
        else:
            outputs = await call(loaded.version)
        reply = infer_reply(self.name, loaded.version, request, request_id, outputs, loaded.contract)
        if self.outcomes is not None:
            self.outcomes.answered(request_id, loaded.version, outputs)
        if self.log is not None and self._rng.random() < loaded.contract.observability.sample_rate:
            self.log.submit(LogRecord(request_id, loaded.digest, loaded.version, loaded.contract, self._now(),
                                      (self._clock() - start) * 1000, request.inputs, outputs))
        return reply

    def _outcome(self, version: str | None, method: str, body: bytes, request_id: str) -> Reply:
        """``POST /v2/models/{name}/outcomes``: score a client's observed outcome against the answer it got."""
        if version is not None:
            return error_reply(404, f"outcomes are reported to /v2/models/{self.name}/outcomes (the version that "
                                    "answered is known from the request id)", request_id)
        if method != "POST":
            return _method_not_allowed("POST", method, request_id)
        if self.outcomes is None:
            return error_reply(404, f"model {self.name!r} does not take outcome reports here", request_id)
        if len(body) > MAX_REPORT_BYTES:
            return error_reply(413, f"an outcome report is at most {MAX_REPORT_BYTES} bytes: report fewer rows at "
                                    "once", request_id)
        try:
            return json_reply(200, self.outcomes.report(body))
        except NotFoundError as exc:
            return error_reply(404, str(exc), request_id)
        except InvalidInputError as exc:
            return error_reply(400, str(exc), request_id)


def _method_not_allowed(allowed: str, method: str, request_id: str) -> Reply:
    reply = error_reply(405, f"{method} is not allowed here: use {allowed}", request_id)
    return Reply(reply.status, reply.body, {**reply.headers, "allow": allowed})
