"""Serve proxy middleware: a model request whose replica died before answering is sent again.

Ray 2.60's proxy retries a request only until a replica accepts it. A replica that
dies while running requests (killed, out of memory, its node lost) leaves the proxy
with no answer for each of them, and the client gets a 500. Inference is idempotent,
so for model paths (``/v2/models/...``) this middleware keeps the request body and,
when the proxy comes back without starting a response, sends the request again: the
proxy's router has marked the dead replica by then, so the next attempt lands on a
live one. It runs inside each proxy, so a request still takes no extra hop.

Install it on a cluster by starting Ray with
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=factory.serve.proxy_middlewares`` (the
embedded cluster of ``factory serve deploy`` and the test clusters set it themselves).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ReplicaLossRetry", "proxy_middlewares", "PROXY_CALLBACK", "PROXY_CALLBACK_ENV"]

log = logging.getLogger(__name__)

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "factory.serve.proxy_middlewares"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ReplicaLossRetry:
    """ASGI middleware: up to ``attempts`` tries for a model request that got no response.

    Bodies larger than ``max_body_bytes`` are passed through untouched (and not retried),
    so the proxy never holds more than that per request.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], attempts: int = 3,
                 prefix: str = "/v2/models/", max_body_bytes: int | None = None):
        if max_body_bytes is None:
            from factory.settings import Settings

            max_body_bytes = Settings.from_env().serve_max_body_bytes
        self.app = app
        self.attempts = attempts
        self.prefix = prefix
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        body, rest = await self._buffer(receive)
        if rest is None and body is None:
            return  # the client left before sending its body
        headers = list(scope.get("headers", []))
        if not any(key.lower() == b"x-request-id" for key, _ in headers):
            headers.append((b"x-request-id", uuid.uuid4().hex.encode()))  # every attempt keeps one id
        attempts = self.attempts if rest is None else 1
        for attempt in range(attempts):
            started = False
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if delivered:
                    return await receive()
                delivered = True
                return {"type": "http.request", "body": body or b"", "more_body": rest is not None}

            async def watch(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                await send(message)

            try:
                await self.app({**scope, "headers": list(headers)}, replay, watch)
            except Exception:
                if started or attempt == attempts - 1:
                    raise
                log.warning("retrying %s: the proxy failed before any response", scope.get("path"))
                continue
            if started:
                return
            if attempt < attempts - 1:
                log.warning("retrying %s: its replica was lost before it answered", scope.get("path"))
        message = json.dumps({"error": f"no replica answered after {attempts} attempt(s): the model's replicas are "
                                      "failing or restarting; retry shortly"}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": message})

    async def _buffer(self, receive: Receive) -> tuple[bytes | None, bool | None]:
        """The whole body and None; or, past ``max_body_bytes``, what was read and True (pass it through)."""
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None
            if size > self.max_body_bytes:
                return b"".join(chunks), True


def proxy_middlewares() -> list[Any]:
    """The middlewares that Serve's proxy loads from ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLossRetry)]
