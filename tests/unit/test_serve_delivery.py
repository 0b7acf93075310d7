"""Progressive delivery inside the model server, without Ray: traffic configs, shadows, outcomes, signals."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from factory.contract import Contract, Resources, default_registry, package
from factory.serve import (
    DeploymentRecord,
    MemoryRecorder,
    MemorySignals,
    ModelServer,
    OutcomeBook,
    ServeMetrics,
    ServeTraffic,
    Shadower,
    StickyKey,
    TrafficConfig,
    VersionPool,
    env_ref,
    load_version,
    read_state,
    version_of,
)
from factory.serve._record import write_record

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}
X = np.random.default_rng(2).standard_normal((2, 4)).astype("float32")


def make_package(store, seed):
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    contract = Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs, resources=Resources(cpus=0.1))
    return package(store, default_registry().build("mlp-classifier", CONFIG, seed=seed).eval(), contract)


def body(rows=X, **extra):
    return json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                                   "data": rows.ravel().tolist()}], **extra}).encode()


class Harness:
    """A model server for 'iris' in prod over a real store, with in-process signals and a gate on shadow runs."""

    def __init__(self, store):
        self.store = store
        self.incumbent, self.candidate = make_package(store, 0), make_package(store, 1)
        self.inc, self.cand = version_of(self.incumbent.digest), version_of(self.candidate.digest)
        store.refs.set(env_ref("iris", "prod"), self.incumbent.digest)
        write_record(store, DeploymentRecord(name="iris", model="iris", env="prod"), expected=None, reason="test")
        self.signals = MemorySignals()
        self.metrics = ServeMetrics("iris", MemoryRecorder(), signals=(self.signals,))
        self.shadower = Shadower("iris", self.metrics.sink, max_in_flight=4)
        self.release: asyncio.Event | None = None
        self.server = ModelServer("iris", pool=VersionPool(lambda d: load_version(store, "prod", d,
                                                                                  admit=lambda s, d_, e: True)),
                                  metrics=self.metrics, shadow_run=self._shadow_run, shadower=self.shadower,
                                  outcomes=OutcomeBook("iris", self.metrics.sink))
        self.traffic = ServeTraffic(store, "prod", [self.incumbent.digest, self.candidate.digest])
        self.follow()

    async def _shadow_run(self, job):
        if self.release is not None:
            await self.release.wait()
        return self.server.run_batch([job])[0]

    def follow(self):
        return self.server.apply(read_state(self.store, "iris"))

    async def call(self, method, path, data=b"", request_id="rid", headers=None):
        return await self.server.handle(method, path, headers or {}, data, request_id)


@pytest.fixture
def harness(store):
    """The harness on a store acting as the controller, which may move model/iris/prod."""
    import dataclasses

    from factory.store import Store

    return Harness(Store(store.home, settings=dataclasses.replace(store.settings, actor="factory-controller")))


def test_a_traffic_config_reaches_the_server_through_the_record_and_splits_by_weight(harness):
    """ServeTraffic writes the config and the candidate into the record; the server then answers from both."""
    h = harness
    h.traffic.apply(TrafficConfig(model="iris", generation=1, weights={h.inc: 50.0, h.cand: 50.0}))
    assert h.traffic.current("iris").generation == 1
    record = read_state(h.store, "iris").record
    assert h.candidate.digest in record.versions
    routing = h.follow()
    assert set(routing.versions) == {h.inc, h.cand}

    async def many():
        return [json.loads((await h.call("POST", "/v2/models/iris/infer", body(), f"r{i}")).body)["model_version"]
                for i in range(60)]

    seen = asyncio.run(many())
    assert {h.inc, h.cand} == set(seen) and 15 < seen.count(h.cand) < 45
    h.traffic.apply(TrafficConfig(model="iris", generation=1, weights={h.inc: 100.0, h.cand: 0.0}))
    assert read_state(h.store, "iris").record.traffic.weights[h.cand] == 50.0  # an old generation changes nothing


def test_a_shadow_copy_never_holds_the_answer_and_its_comparison_is_recorded(harness):
    """The primary answers while the shadow waits; once it runs, its agreement lands in the signals."""
    h = harness
    h.traffic.apply(TrafficConfig(model="iris", generation=1, weights={h.inc: 100.0, h.cand: 0.0},
                                  shadows={h.cand: 100.0}))
    h.follow()

    async def scenario():
        h.release = asyncio.Event()
        reply = await h.call("POST", "/v2/models/iris/infer", body())
        in_flight = h.shadower.in_flight
        h.release.set()
        await h.shadower.drain(10)
        return reply, in_flight

    reply, in_flight = asyncio.run(scenario())
    assert reply.status == 200 and json.loads(reply.body)["model_version"] == h.inc and in_flight == 1
    figures = h.signals.figures("iris", [h.inc, h.cand], 0, 4e9)
    assert figures[h.cand].compared == 1 and 0 <= figures[h.cand].agreement["label"] <= 1
    assert figures[h.inc].requests == 1 and figures[h.cand].requests == 1  # the copy's own request, on its version


def test_shadows_beyond_the_bound_are_dropped_not_queued(harness):
    """With the candidate stuck, copies past max_in_flight are dropped and every primary still answers."""
    h = harness
    h.traffic.apply(TrafficConfig(model="iris", generation=1, weights={h.inc: 100.0, h.cand: 0.0},
                                  shadows={h.cand: 100.0}))
    h.follow()

    async def scenario():
        h.release = asyncio.Event()
        replies = [await h.call("POST", "/v2/models/iris/infer", body(), f"r{i}") for i in range(10)]
        h.release.set()
        await h.shadower.drain(10)
        return replies

    assert all(r.status == 200 for r in asyncio.run(scenario()))
    assert h.shadower.stats.dropped == 6 and h.shadower.stats.compared == 4


def test_an_outcome_report_scores_the_version_that_answered(harness):
    """POST .../outcomes with a request id and its observed labels counts right and wrong for that version."""
    h = harness

    async def scenario():
        answer = json.loads((await h.call("POST", "/v2/models/iris/infer", body(id="order-1"))).body)
        labels = next(o["data"] for o in answer["outputs"] if o["name"] == "label")
        report = json.dumps({"id": "order-1", "label": [labels[0], labels[1] + 1]}).encode()
        scored = await h.call("POST", "/v2/models/iris/outcomes", report)
        unknown = await h.call("POST", "/v2/models/iris/outcomes", b'{"id": "never", "label": 1}')
        bad = await h.call("POST", "/v2/models/iris/outcomes", b'{"id": "order-1"}')
        return scored, unknown, bad

    scored, unknown, bad = asyncio.run(scenario())
    assert scored.status == 200 and json.loads(scored.body)["scores"] == [True, False]
    assert unknown.status == 404 and "never" in json.loads(unknown.body)["error"]
    assert bad.status == 400 and '"label" or "value"' in json.loads(bad.body)["error"]
    figures = h.signals.figures("iris", [h.inc], 0, 4e9)[h.inc]
    assert figures.label_outcomes == 2 and figures.accuracy == 0.5


def test_a_config_sticky_on_an_input_keeps_each_key_on_one_version(harness):
    """Requests whose first feature is the same land on the same version, whatever their ids."""
    h = harness
    h.traffic.apply(TrafficConfig(model="iris", generation=1, weights={h.inc: 50.0, h.cand: 50.0},
                                  sticky=StickyKey(source="input", name="features")))
    h.follow()

    async def versions(rows):
        return {json.loads((await h.call("POST", "/v2/models/iris/infer", body(rows), f"id-{i}")).body)
                ["model_version"] for i in range(12)}

    keys = [np.full((1, 4), float(k), np.float32) for k in range(12)]
    per_key = [asyncio.run(versions(rows)) for rows in keys]
    assert all(len(seen) == 1 for seen in per_key)
    assert set().union(*per_key) == {h.inc, h.cand}
