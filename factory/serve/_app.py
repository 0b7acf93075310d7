"""The Ray Serve deployments: one application per served model, and the root that answers ``/v2``.

A model application is one deployment (``factory-model``) at ``/v2/models/<name>``: the
proxy sends each request straight to a replica, which routes between the versions it
holds, checks, batches, runs, answers, shadows, logs and records metrics itself, so no
request takes an extra hop. Each replica opens the store from the settings it was
given, follows its deployment's state there (see ``_follow``), and holds every version
that state names. What it measures goes to Ray's metrics (Prometheus) and, every half
second, to the cluster's signals collector (``_collector``) that rollouts read. The root application
(``factory-oip`` at ``/v2``) answers health, server metadata, the OpenAPI description,
and unknown models. Everything here is a thin adapter over ``ModelServer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from factory.errors import InvalidRequestError
from factory.serve._batching import Job, rows_of, run_jobs
from factory.serve._oip import Reply, error_reply, json_reply, parse_route, server_metadata
from factory.serve._openapi import openapi
from factory.serve._record import MODEL_DEPLOYMENT

if TYPE_CHECKING:
    from factory.serve._record import ServeState
    from factory.settings import Settings
    from factory.store import Store

__all__ = ["ModelDeployment", "OipRoot", "MODEL_DEPLOYMENT", "ROOT_DEPLOYMENT", "REPLICA_HEADER"]

log = logging.getLogger(__name__)

ROOT_DEPLOYMENT = "factory-oip"


def _log_writer(store: Store, model: str) -> Any:
    """Where sampled rows go: a buffered writer on the model's FeatureLog (one per replica, closed at shutdown)."""
    from factory.serve._log import log_name
    from factory.store import FeatureLog

    return FeatureLog(store, log_name(model)).writer(flush_rows=LOG_FLUSH_ROWS, flush_seconds=LOG_FLUSH_S)


# One Lance commit per replica every few seconds (or this many rows): each commit costs CPU and leaves a fragment.
LOG_FLUSH_ROWS = 5_000
LOG_FLUSH_S = 2.0
SHADOW_THREADS = 2  # shadow copies run here, never on the event loop that answers


REPLICA_HEADER = "x-factory-replica"


def _response(reply: Reply, replica: str | None = None) -> Response:
    headers = reply.headers if replica is None else {**reply.headers, REPLICA_HEADER: replica}
    return Response(reply.body, status_code=reply.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length", "")
    too_big = InvalidRequestError(f"the request body is over the limit of {limit} bytes "
                                  "(FACTORY_SERVE_MAX_BODY_BYTES): send fewer rows per request", None, 413)
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name=MODEL_DEPLOYMENT)
class ModelDeployment:
    """A replica of one served model; ``name`` is its deployment record in the store."""

    def __init__(self, name: str, settings: Settings, poll_s: float = 0.25):
        import ray
        import torch

        from factory.serve._admission import load_version
        from factory.serve._collector import SLOT_S, SignalsPusher
        from factory.serve._follow import Follower
        from factory.serve._log import InferenceLog
        from factory.serve._metrics import RayRecorder, ServeMetrics
        from factory.serve._outcomes import OutcomeBook
        from factory.serve._record import read_state
        from factory.serve._server import ModelServer
        from factory.serve._shadow import Shadower
        from factory.serve._signals import MemorySignals
        from factory.serve._versions import VersionPool
        from factory.store import Store

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self.settings = settings
        self.replica = serve.get_replica_context().replica_id.unique_id
        store = Store(settings.home, settings=settings)
        state = read_state(store, name)
        local = MemorySignals(slot_s=SLOT_S, retention_s=600.0)
        metrics = ServeMetrics(name, RayRecorder(), signals=(local,))
        self.pusher = SignalsPusher(local).start()
        self.log = InferenceLog(_log_writer(store, state.record.model), on_written=metrics.logged,
                                on_dropped=metrics.dropped)
        self._shadow_pool = ThreadPoolExecutor(SHADOW_THREADS, thread_name_prefix="factory-shadow")
        env = state.record.env
        pool = VersionPool(lambda digest: load_version(store, env, digest), capacity=state.record.max_versions)
        self.server = ModelServer(name, pool=pool, metrics=metrics, log=self.log,
                                  max_body_bytes=settings.serve_max_body_bytes, run=self._infer,
                                  shadow_run=self._shadow, shadower=Shadower(name, metrics.sink),
                                  outcomes=OutcomeBook(name, metrics.sink))
        self._apply(state)
        self.follower = Follower(lambda: read_state(store, name), self._apply, key=state.key, poll_s=poll_s,
                                 on_error=lambda error: setattr(self.server, "apply_error", error)).start()

    def _apply(self, state: ServeState) -> None:
        routing = self.server.apply(state)
        self._infer.set_max_batch_size(routing.max_batch_size)
        wait_ms = routing.versions[routing.primary].contract.resources.batch_wait_ms
        self._infer.set_batch_wait_timeout_s(wait_ms / 1000)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, batch_size_fn=rows_of)
    async def _infer(self, jobs: list[Job]) -> list[Any]:
        return self.server.run_batch(jobs)

    async def _shadow(self, job: Job) -> Any:
        """A shadow copy, in the shadow threads: the event loop goes on answering meanwhile."""
        return (await asyncio.get_running_loop().run_in_executor(self._shadow_pool, run_jobs, [job]))[0]

    async def __call__(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            body = await _read_body(request, self.settings.serve_max_body_bytes)
        except InvalidRequestError as exc:
            return _response(self.server.reject(exc, request_id), self.replica)
        reply = await self.server.handle(request.method, request.url.path, request.headers, body, request_id)
        return _response(reply, self.replica)

    def __del__(self) -> None:
        for part in ("follower", "pusher"):
            running = getattr(self, part, None)
            if running is not None:
                running.stop()
        log_ = getattr(self, "log", None)
        if log_ is not None:
            log_.close(timeout=10.0)
        pool = getattr(self, "_shadow_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


@serve.deployment(name=ROOT_DEPLOYMENT, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class OipRoot:
    """``/v2``, ``/v2/health/*``, ``/v2/openapi.json``, and 404 for models not served."""

    def __init__(self, cache_s: float = 1.0):
        self.cache_s = cache_s
        self._models: tuple[float, dict[str, str]] = (-1e9, {})

    async def models(self) -> dict[str, str]:
        """Served models by name, with their Serve application status (cached for ``cache_s``)."""
        at, models = self._models
        if time.monotonic() - at > self.cache_s:
            status = await asyncio.to_thread(serve.status)
            models = {name: str(app.status.value if hasattr(app.status, "value") else app.status)
                      for name, app in status.applications.items() if MODEL_DEPLOYMENT in app.deployments}
            self._models = (time.monotonic(), models)
        return models

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        request_id = request.headers.get("x-request-id", "")
        if request.method != "GET" and parse_route(request.url.path) is None:
            return _response(error_reply(405, f"{request.method} is not allowed on {path}: use GET", request_id))
        if path == "/v2":
            return _response(json_reply(200, server_metadata()))
        if path == "/v2/health/live":
            return _response(json_reply(200, {"live": True}))
        if path == "/v2/health/ready":
            models = await self.models()
            ready = all(status == "RUNNING" for status in models.values())
            return _response(json_reply(200 if ready else 503, {"ready": ready, "models": models}))
        if path == "/v2/openapi.json":
            return _response(json_reply(200, openapi()))
        route = parse_route(request.url.path)
        if route is not None:
            served = sorted(await self.models())
            return _response(error_reply(404, f"no model named {route.model!r} is served here: the served models are "
                                              f"{served}", request_id))
        return _response(error_reply(404, f"no such endpoint {path!r}: see /v2/openapi.json", request_id))
