"""Killing model server replicas under load: clients do not notice, and Serve replaces the replica.

Ray 2.60's router retries a request on another replica only while no replica has
accepted it; a request already running on a replica when it is killed comes back from
the proxy as a 500. factory's proxy middleware (``factory.serve._proxy``, installed
through ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``) sends such a request again, and
the router, which has marked the dead replica by then, picks a live one.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from factory.serve import deploy
from factory.serve._app import REPLICA_HEADER

# Requests per second, sent at a fixed pace whatever the answers take: well under what one replica
# answers on a 2-core machine. With the other test lane training beside it, CI runs had 36 (at 40
# per second) and 7 (at 25) of 1,200 requests time out (60 s) and none refused: a backlog the starved
# survivor could not drain (it answered about 6 a second), which measures the other lane, not the
# failover. The test is therefore ``solo`` (tests/conftest.py): the other lane waits while it runs.
# Each run prints its timeline (latency and failures per 2 s of sending), so a failure shows which it was.
RATE = 25
# 1,200 requests: 300 before the kill, so both replicas have answered some, then 36 s in which the
# survivor takes the load and Serve starts the replacement. The bound stays 0.1 % (here: one request).
SECONDS = 48
KILL_AT = 12
BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}


async def steady_load(url: str, kill) -> tuple[list[int | str], set[str]]:
    """Send RATE requests per second for SECONDS; call ``kill`` after KILL_AT seconds."""
    outcomes: list[int | str] = []
    replicas: set[str] = set()
    timeline: list[tuple[float, float, int | str]] = []  # (sent at, seconds taken, outcome)

    async def one(client: httpx.AsyncClient) -> None:
        sent = time.monotonic()
        try:
            reply = await client.post(url, json=BODY)
            outcomes.append(reply.status_code)
            replicas.add(reply.headers.get(REPLICA_HEADER, ""))
        except httpx.HTTPError as exc:
            outcomes.append(type(exc).__name__)
        timeline.append((sent - start, time.monotonic() - sent, outcomes[-1]))

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        tasks = []
        start = time.monotonic()
        killed = False
        for i in range(RATE * SECONDS):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            if not killed and time.monotonic() - start >= KILL_AT:
                await asyncio.to_thread(kill)
                killed = True
            tasks.append(asyncio.create_task(one(client)))
        await asyncio.gather(*tasks)
    for second in range(0, SECONDS + 1, 2):
        window = [(took, o) for at, took, o in timeline if second <= at < second + 2]
        if window:
            took = sorted(t for t, _ in window)
            print(f"sent {second:2d}-{second + 2:2d} s: {len(window)} requests, median {took[len(took) // 2]:.3f} s, "
                  f"max {took[-1]:.3f} s, failed {sum(o != 200 for _, o in window)}")
    return outcomes, replicas


@pytest.mark.solo
def test_killing_a_replica_under_load_costs_at_most_a_tenth_of_a_percent(store, mlp_package, serve_url):
    """With two replicas, one killed mid-load: at most 0.1 % of requests fail and a new replica takes over."""
    import ray
    from ray import serve

    done = deploy(store, mlp_package().digest, "dev", replicas=2, timeout_s=240)
    victim = httpx.get(done.url + "/ready", timeout=30).headers[REPLICA_HEADER]

    def kill() -> None:
        ray.kill(ray.get_actor(f"SERVE_REPLICA::iris#factory-model#{victim}", namespace="serve"), no_restart=True)

    outcomes, replicas = asyncio.run(steady_load(done.url + "/infer", kill))
    errors = [o for o in outcomes if o != 200]
    print(f"replica killed under {RATE} req/s: {len(errors)} of {len(outcomes)} requests failed {errors}")
    assert len(errors) <= len(outcomes) / 1000, f"{len(errors)} of {len(outcomes)} failed: {errors}"

    def running() -> int:
        states = serve.status().applications["iris"].deployments["factory-model"].replica_states
        return sum(n for state, n in states.items() if str(getattr(state, "value", state)) == "RUNNING")

    deadline = time.monotonic() + 120
    while running() < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert running() == 2
    assert len(replicas - {victim}) >= 1 and victim in replicas


def test_a_package_the_replicas_cannot_load_leaves_the_old_version_serving(store, mlp_package, serve_url):
    """A new package with a corrupted weights file: deploy fails naming it, refs go back, the old one answers."""
    from factory.contract import ModelPackageMeta
    from factory.errors import FactorySystemError
    from factory.serve import version_of

    old = mlp_package()
    done = deploy(store, old.digest, "dev", timeout_s=240)
    new = mlp_package(seed=1)
    weights = store.artifacts.get(new.digest).meta(ModelPackageMeta).files["model.safetensors"]
    with open(store.blobs.path(weights), "r+b") as f:
        f.seek(-8, 2)  # in the tensors, past the header: only the digest can tell
        f.write(b"\x00\x01\x02\x03")
    try:
        deploy(store, new.digest, "dev", timeout_s=240)
    except FactorySystemError as exc:
        message = str(exc)
    else:
        raise AssertionError("deploying a corrupt package succeeded")
    assert "could not apply" in message and "CorruptBlobError" in message and "refs restored" in message
    assert store.refs.get("model/iris/dev") == old.digest
    reply = httpx.post(done.url + "/infer", json=BODY, timeout=30)
    assert reply.status_code == 200 and reply.json()["model_version"] == version_of(old.digest)


def test_a_request_running_on_a_killed_replica_is_answered_by_another(serve_url, tmp_path):
    """The proxy sends a request whose replica died mid-request to a live replica: the client sees its answer."""
    import threading

    import ray
    from ray import serve
    from starlette.responses import Response

    flag = tmp_path / "sleep-once"
    flag.write_text("")
    started = tmp_path / "started"

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
    class Slow:
        """Echoes the body; the first request to arrive claims the flag and hangs (until its replica is killed)."""

        async def __call__(self, request):
            body = await request.body()
            replica = serve.get_replica_context().replica_id.unique_id
            try:
                flag.unlink()
            except FileNotFoundError:
                return Response(body, headers={"x-replica": replica})
            started.write_text(replica)
            await asyncio.sleep(600)

    serve.run(Slow.bind(), name="slow", route_prefix="/v2/models/slow")
    answer = {}
    client = threading.Thread(target=lambda: answer.update(reply=httpx.post(
        f"{serve_url}/v2/models/slow/infer", content=b"same body", timeout=300)))
    client.start()
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    victim = started.read_text()
    ray.kill(ray.get_actor(f"SERVE_REPLICA::slow#Slow#{victim}", namespace="serve"), no_restart=True)
    client.join(300)
    reply = answer["reply"]
    assert reply.status_code == 200 and reply.content == b"same body"
    assert reply.headers["x-replica"] != victim
