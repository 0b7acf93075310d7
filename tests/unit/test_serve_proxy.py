"""The proxy middleware that sends a model request again when its replica died before answering."""

from __future__ import annotations

import asyncio
import json

from factory.serve import ReplicaLossRetry


class Proxy:
    """Stands in for Serve's proxy: the first ``lost`` calls end without a response, as with a dead replica."""

    def __init__(self, lost: int = 0, status: int = 200):
        self.lost = lost
        self.status = status
        self.calls: list[tuple[bytes, str]] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        body = message["body"]
        while message.get("more_body"):
            message = await receive()
            body += message["body"]
        request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode()
        self.calls.append((body, request_id))
        if len(self.calls) <= self.lost:
            return
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


def run(app, path="/v2/models/iris/infer", chunks=(b'{"inputs": []}',)):
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "headers": []}, receive, send))
    return sent


def test_a_request_whose_replica_died_is_sent_again_with_the_same_body_and_id():
    """The client gets the answer of the second attempt; both attempts carried the same body and request id."""
    proxy = Proxy(lost=1)
    sent = run(ReplicaLossRetry(proxy, max_body_bytes=1000))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"inputs": []}'
    assert len(proxy.calls) == 2 and proxy.calls[0] == proxy.calls[1]


def test_an_answer_from_the_model_is_never_retried():
    """A 500 that the model server itself sent reaches the client as is, after one attempt."""
    proxy = Proxy(status=500)
    sent = run(ReplicaLossRetry(proxy, max_body_bytes=1000))
    assert sent[0]["status"] == 500 and len(proxy.calls) == 1


def test_when_every_attempt_is_lost_the_client_gets_a_503_saying_so():
    """After the last attempt the client is told to retry, never left without an answer."""
    proxy = Proxy(lost=5)
    sent = run(ReplicaLossRetry(proxy, attempts=3, max_body_bytes=1000))
    assert sent[0]["status"] == 503 and "no replica answered after 3 attempt(s)" in json.loads(sent[1]["body"])["error"]
    assert len(proxy.calls) == 3


def test_large_bodies_and_other_paths_pass_through_once():
    """A body over the limit streams through untouched (no copy kept, no retry); /v2/health is not touched."""
    proxy = Proxy(lost=1)
    sent = run(ReplicaLossRetry(proxy, max_body_bytes=4), chunks=(b"01234", b"56789"))
    assert len(proxy.calls) == 1 and proxy.calls[0][0] == b"0123456789"
    assert sent[0]["status"] == 503
    other = Proxy(lost=1)
    assert run(ReplicaLossRetry(other, max_body_bytes=4), path="/v2/health/ready") == []
    assert other.calls == [(b'{"inputs": []}', "")]
