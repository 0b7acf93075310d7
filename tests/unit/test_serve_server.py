"""The model server's logic without Ray: OIP answers, errors, versions, batching, logging, metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import random

import numpy as np
import pytest
import tritonclient.http as triton

from factory.contract import Contract, Observability, Resources, default_registry, package
from factory.errors import NotAdmittedError
from factory.serve import (
    DeploymentRecord,
    InferenceLog,
    LoadedVersion,
    MemoryRecorder,
    ModelServer,
    ServeMetrics,
    VersionPool,
    env_ref,
    load_version,
    Routing,
    read_state,
    require_admitted,
    set_traffic,
    version_of,
)
from factory.serve._batching import Job, run_jobs
from factory.serve._log import log_name
from factory.serve._record import write_record
from factory.store import FeatureLog

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}
X = np.random.default_rng(1).standard_normal((5, 4)).astype("float32")


def make_package(store, seed=0, sample_rate=1.0, max_batch=8):
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    contract = Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs,
                        resources=Resources(max_batch_size=max_batch, cpus=0.1),
                        observability=Observability(sample_rate=sample_rate))
    return package(store, default_registry().build("mlp-classifier", CONFIG, seed=seed).eval(), contract)


def allow(store, digest, env):
    return True


@pytest.fixture
def served(store):
    """A server for 'iris' in dev whose record and env ref live in a real store."""
    pkg = make_package(store)
    store.refs.set(env_ref("iris", "dev"), pkg.digest)
    write_record(store, DeploymentRecord(name="iris", model="iris", env="dev"), expected=None, reason="test")
    recorder = MemoryRecorder()
    metrics = ServeMetrics("iris", recorder)
    feature_log = FeatureLog(store, log_name("iris"))
    ilog = InferenceLog(feature_log.append, flush_interval_s=0.05, on_written=metrics.logged)
    pool = VersionPool(lambda d: load_version(store, "dev", d, admit=allow))
    server = ModelServer("iris", pool=pool, metrics=metrics, log=ilog, max_body_bytes=64 * 1024,
                         rng=random.Random(0))
    server.apply(read_state(store, "iris"))
    yield server, pkg, recorder, feature_log
    ilog.close()


def call(server, method, path, body=b"", headers=None, request_id="rid-0"):
    return asyncio.run(server.handle(method, path, headers or {}, body, request_id))


def infer_json(rows=X, request_id=None):
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                        "data": rows.ravel().tolist()}]}
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def test_a_json_request_answers_what_the_package_answers_in_process(served):
    """Plain JSON in, row-major data out, equal to the package's own predict()."""
    server, pkg, _, _ = served
    reply = call(server, "POST", "/v2/models/iris/infer", infer_json(request_id="abc"))
    assert reply.status == 200
    body = json.loads(reply.body)
    expected = server.routing.versions[version_of(pkg.digest)].model.predict({"features": X})
    assert body["id"] == "abc" and body["model_name"] == "iris" and body["model_version"] == version_of(pkg.digest)
    out = {o["name"]: o for o in body["outputs"]}
    assert np.allclose(np.array(out["probabilities"]["data"]).reshape(5, 3), expected["probabilities"].numpy())
    assert out["label"]["data"] == expected["label"].tolist() and out["label"]["datatype"] == "INT64"


def test_the_id_is_assigned_when_the_client_sends_none(served):
    """Without an OIP id, the response carries the server's request id."""
    reply = call(served[0], "POST", "/v2/models/iris/infer", infer_json(), request_id="assigned-7")
    assert json.loads(reply.body)["id"] == "assigned-7"


def test_tritonclient_binary_bodies_round_trip(served):
    """tritonclient's default binary tensors come back binary and parse to the package's outputs."""
    server, pkg, _, _ = served
    tensor = triton.InferInput("features", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    body, length = triton.InferenceServerClient.generate_request_body([tensor], request_id="t1")
    reply = call(server, "POST", "/v2/models/iris/infer", body, {"inference-header-content-length": str(length)})
    assert reply.status == 200
    result = triton.InferenceServerClient.parse_response_body(
        reply.body, header_length=int(reply.headers["inference-header-content-length"]))
    expected = server.routing.versions[version_of(pkg.digest)].model.predict({"features": X})
    assert np.array_equal(result.as_numpy("probabilities"), expected["probabilities"].numpy())
    assert np.array_equal(result.as_numpy("label"), expected["label"].numpy())
    assert result.get_response()["id"] == "t1"


def test_gzip_bodies_are_read_and_bombs_refused(served):
    """A gzip body is inflated; one that inflates past the limit is a 413."""
    server = served[0]
    ok = call(server, "POST", "/v2/models/iris/infer", gzip.compress(infer_json()), {"content-encoding": "gzip"})
    assert ok.status == 200
    bomb = gzip.compress(b" " * (1 << 20) + infer_json())
    reply = call(server, "POST", "/v2/models/iris/infer", bomb, {"content-encoding": "gzip"})
    assert reply.status == 413 and "inflates to more than" in json.loads(reply.body)["error"]


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{", 400, "not valid JSON"),
    (json.dumps({"inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
     400, "'features' is FP32 in the contract"),
    (json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
     400, "shape [1, 3]"),
    (json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [9, 4], "data": [0] * 36}]}),
     400, "has 9 rows; the model takes 1 to 8"),
    (json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, None, 3, 4]}]}),
     400, "not nullable"),
    (b"x" * (65 * 1024), 413, "over the limit"),
])
def test_bad_requests_are_4xx_naming_the_problem(served, body, status, words):
    """A request the contract refuses gets a 4xx whose error says what is wrong; errors are counted by code."""
    server, _, recorder, _ = served
    reply = call(server, "POST", "/v2/models/iris/infer", body if isinstance(body, bytes) else body.encode())
    assert reply.status == status
    payload = json.loads(reply.body)
    assert words in payload["error"] and payload["id"] == "rid-0"
    assert recorder.total("factory_serve_errors", code=str(status)) == 1


def test_metadata_ready_and_unknown_versions(served):
    """Metadata comes from the contract; unknown versions are 404 naming the served ones; wrong methods 405."""
    server, pkg, _, _ = served
    version = version_of(pkg.digest)
    meta = json.loads(call(server, "GET", "/v2/models/iris").body)
    assert meta == {**pkg.contract.oip_metadata([version]), "name": "iris"}
    assert call(server, "GET", f"/v2/models/iris/versions/{version}/ready").status == 200
    missing = call(server, "GET", "/v2/models/iris/versions/000000000000/ready")
    assert missing.status == 404 and version in json.loads(missing.body)["error"]
    assert call(server, "GET", "/v2/models/iris/infer").status == 405
    assert call(server, "POST", "/v2/models/iris").status == 405


def test_a_failing_model_is_a_500_and_the_server_keeps_answering(served):
    """A model that raises on valid input answers 500 for that request only."""
    server, pkg, _, _ = served
    good = server.routing
    loaded = good.versions[good.primary]

    class Broken:
        def predict(self, inputs):
            raise RuntimeError("boom")

    server._routing = Routing(good.primary, {good.primary: LoadedVersion(pkg.digest, loaded.contract, Broken())})
    reply = call(server, "POST", "/v2/models/iris/infer", infer_json(request_id="mine"))
    assert reply.status == 500 and "RuntimeError: boom" in json.loads(reply.body)["error"]
    assert json.loads(reply.body)["id"] == "mine"
    server._routing = good
    assert call(server, "POST", "/v2/models/iris/infer", infer_json()).status == 200


def test_a_logged_request_reads_back_from_the_feature_log_by_its_id(served):
    """A sampled request lands in the model's FeatureLog with its inputs, outputs, digest and timing."""
    server, pkg, recorder, feature_log = served
    call(server, "POST", "/v2/models/iris/infer", infer_json(X[:2], request_id="logged-1"))
    assert server.log.flush(10)
    rows = feature_log.read("request_id = 'logged-1'").to_pylist()
    assert [r["row"] for r in rows] == [0, 1]
    assert rows[0]["model"] == pkg.digest and rows[0]["version"] == version_of(pkg.digest)
    assert np.allclose(rows[1]["features"], X[1]) and rows[0]["latency_ms"] > 0
    assert set(rows[0]["prediction"]) == {"probabilities", "label"}
    assert recorder.total("factory_serve_logged_rows") == 2


def test_two_versions_route_by_name_and_by_weight(served, store):
    """A second version is served at its own path, and a traffic split sends keys to both by weight."""
    server, pkg, _, _ = served
    other = make_package(store, seed=1)
    set_traffic(store, "iris", {version_of(pkg.digest): 1, version_of(other.digest): 1}, versions=(other.digest,))
    routing = server.apply(read_state(store, "iris"))
    assert set(routing.versions) == {version_of(pkg.digest), version_of(other.digest)}
    one = json.loads(call(server, "POST", f"/v2/models/iris/versions/{version_of(other.digest)}/infer",
                          infer_json()).body)
    assert one["model_version"] == version_of(other.digest)
    seen = {json.loads(call(server, "POST", "/v2/models/iris/infer", infer_json(), request_id=f"k{i}").body)
            ["model_version"] for i in range(40)}
    assert seen == set(routing.versions)
    sticky = {json.loads(call(server, "POST", "/v2/models/iris/infer", infer_json(), request_id=f"k{i}",
                              headers={"x-factory-route-key": "user-1"}).body)["model_version"] for i in range(10)}
    assert len(sticky) == 1


def test_traffic_cannot_name_a_version_not_held(served, store):
    """A split naming a package the deployment does not hold is refused before any replica sees it."""
    with pytest.raises(Exception, match="does not hold"):
        set_traffic(store, "iris", {"0123456789ab": 1})


def test_batches_group_by_version_split_back_and_respect_max_batch(served, store):
    """Requests run together give each request exactly its own rows' outputs, within max_batch_size."""
    server, pkg, recorder, _ = served
    loaded = server.routing.versions[version_of(pkg.digest)]
    jobs = [Job(loaded, {"features": X[i:i + n]}, n) for i, n in ((0, 3), (1, 4), (2, 2))]
    results = server.run_batch(jobs)
    for job, result in zip(jobs, results, strict=True):
        alone = loaded.model.predict(dict(job.inputs))
        assert np.allclose(result["probabilities"], alone["probabilities"].numpy(), atol=1e-6)
    assert sorted(recorder.values("factory_serve_batch_rows")) == [9]
    assert all(len(r["label"]) == j.rows for j, r in zip(jobs, run_jobs(jobs), strict=True))


def test_admission_refusal_names_what_is_missing_and_nothing_loads(store):
    """A package its environment does not admit is refused, naming the missing items, before it is read."""

    class Decision:
        allowed = False
        missing = ("https://factory.dev/fairness/v1",)

    with pytest.raises(NotAdmittedError, match="not admitted to prod: missing https://factory.dev/fairness/v1"):
        load_version(store, "prod", "sha256:" + "0" * 64, admit=lambda s, d, e: Decision())
    require_admitted(store, "sha256:" + "0" * 64, "dev", admit=lambda s, d, e: True)
