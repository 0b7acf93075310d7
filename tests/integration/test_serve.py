"""Model servers on a real Ray Serve: standard OIP clients, versions without restarts, logs, metrics, the CLI."""

from __future__ import annotations

import json
import shlex
import time

import httpx
import numpy as np
import pytest

from factory.contract import load
from factory.serve import deploy, read_record, set_traffic, version_of
from factory.serve._app import REPLICA_HEADER

X = np.random.default_rng(3).standard_normal((6, 4)).astype("float32")


def eventually(check, timeout=60.0, every=0.25):
    """Poll ``check`` until it returns something truthy; its last value (or the last exception) otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return value
        time.sleep(every)


def infer_body(rows=X, **extra):
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                        "data": rows.ravel().tolist()}], **extra}


@pytest.fixture
def iris(store, mlp_package, serve_url):
    """The iris classifier served in dev from a fresh store, and its package."""
    pkg = mlp_package()
    done = deploy(store, pkg.digest, "dev", timeout_s=180)
    return done, pkg


# The model the tests that only send requests share: its own name, so the tests that deploy 'iris' never touch it.
SHARED = "shared-iris"


@pytest.fixture(scope="module")
def served(serve_http, tmp_path_factory):
    """The iris classifier, named ``SHARED``, served in dev from a store of the module's: (store, deployed, package).

    For the tests that only send it requests: each deploy starts a replica (seconds on
    2 cores), so they share one. Its application is deleted after the module.
    """
    from ray import serve

    from factory.settings import Settings
    from factory.store import Store
    from serve_kit import package_mlp

    home = tmp_path_factory.mktemp("served") / "home"
    store = Store(home, settings=Settings(home=str(home), catalog=str(home / "catalog.db")))
    pkg = package_mlp(store, name=SHARED)
    yield store, deploy(store, pkg.digest, "dev", timeout_s=180), pkg
    serve.delete(SHARED)


def test_tritonclient_gets_the_packages_own_outputs(served, serve_http):
    """A standard OIP client works unchanged: health, metadata, and outputs equal to in-process ones."""
    import tritonclient.http as triton

    store, done, pkg = served
    client = triton.InferenceServerClient(url=serve_http.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready(SHARED, done.version)
    assert eventually(client.is_server_ready)
    meta = client.get_model_metadata(SHARED)
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["versions"] == [done.version]
    expected = load(store, pkg.digest).predict({"features": X})
    for binary in (True, False):
        tensor = triton.InferInput("features", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=binary)
        outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
        result = client.infer(SHARED, [tensor], outputs=outputs, request_id=f"triton-{binary}")
        assert np.array_equal(result.as_numpy("probabilities"), expected["probabilities"].numpy())
        assert np.array_equal(result.as_numpy("label"), expected["label"].numpy())
        assert result.get_response()["id"] == f"triton-{binary}"


def test_plain_json_and_bad_requests(served, serve_http):
    """curl-style JSON works with an assigned id; bad input is a 4xx naming it; unknown models are 404."""
    _, done, _ = served
    with httpx.Client(base_url=serve_http, timeout=30) as http:
        ok = http.post(f"/v2/models/{SHARED}/infer", json=infer_body())
        assert ok.status_code == 200
        assert ok.json()["id"] == ok.headers["x-request-id"] and ok.json()["model_version"] == done.version
        bad = http.post(f"/v2/models/{SHARED}/infer", json={"inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1.0, "2", 3.0, 4.0]}]})
        assert bad.status_code == 400 and "input 'features' is FP32" in bad.json()["error"]
        missing = http.post("/v2/models/nope/infer", json=infer_body())
        assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["error"]
        assert f"'{SHARED}'" in missing.json()["error"]
        big = http.post(f"/v2/models/{SHARED}/infer", content=b"0" * (17 * 2**20))
        assert big.status_code == 413
        assert http.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_a_curl_from_deploy_works(served):
    """The curl that deploy prints is a request the server answers."""
    _, done, _ = served
    argv = shlex.split(done.curl)
    body = argv[argv.index("-d") + 1]
    reply = httpx.post(done.url + "/infer", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert reply.status_code == 200 and {o["name"] for o in reply.json()["outputs"]} == {"probabilities", "label"}


def test_a_new_version_and_a_split_reach_the_replica_without_a_restart(iris, store, mlp_package, serve_url):
    """Deploying a second package and splitting traffic change what answers, on the same replica."""
    done, first = iris
    with httpx.Client(base_url=serve_url, timeout=30) as http:
        replica = http.get("/v2/models/iris/ready").headers[REPLICA_HEADER]
        second = mlp_package(seed=1)
        again = deploy(store, second.digest, "dev", timeout_s=180)
        assert not again.restarted
        answer = http.post("/v2/models/iris/infer", json=infer_body())
        assert answer.json()["model_version"] == version_of(second.digest)
        set_traffic(store, "iris", {version_of(first.digest): 1, version_of(second.digest): 1},
                    versions=(first.digest,))

        def both_answer():
            seen = {http.post("/v2/models/iris/infer", json=infer_body()).json()["model_version"] for _ in range(30)}
            return seen == {version_of(first.digest), version_of(second.digest)}

        assert eventually(both_answer, timeout=30)
        assert http.get("/v2/models/iris/ready").headers[REPLICA_HEADER] == replica
    assert read_record(store, "iris")[0].traffic


def test_a_logged_request_reads_back_by_its_id(served, serve_http):
    """A sampled request is found in the model's feature log by its request id, with digest and outputs."""
    from factory.store import FeatureLog

    store, done, pkg = served
    reply = httpx.post(f"{serve_http}/v2/models/{SHARED}/infer", json=infer_body(X[:3], id="trace-me"), timeout=30)
    assert reply.status_code == 200
    feature_log = FeatureLog(store, f"inference-{SHARED}")
    rows = eventually(lambda: feature_log.read("request_id = 'trace-me'").to_pylist(), timeout=60)
    assert [r["row"] for r in rows] == [0, 1, 2] and {r["model"] for r in rows} == {pkg.digest}
    assert np.allclose(rows[2]["features"], X[2])


def test_metrics_scrape_as_prometheus_text(served, ray_cluster, serve_http):
    """Requests, errors by code, latency, batch rows and logged rows per model and version, over HTTP."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(base_url=serve_http, timeout=30) as http:
        for _ in range(5):
            http.post(f"/v2/models/{SHARED}/infer", json=infer_body())
        http.post(f"/v2/models/{SHARED}/infer", content=b"{")
    port = ray.nodes()[0]["MetricsExportPort"]

    def scrape():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("model") == SHARED:
                    key = (s.name, s.labels.get("code", ""), s.labels.get("le", ""))
                    samples[key] = samples.get(key, 0) + s.value
        wanted = [("ray_factory_serve_requests_total", "200", ""), ("ray_factory_serve_errors_total", "400", ""),
                  ("ray_factory_serve_logged_rows_total", "", ""), ("ray_factory_serve_batch_rows_count", "", ""),
                  ("ray_factory_serve_request_latency_ms_count", "", "")]
        return samples if all(samples.get(k, 0) > 0 for k in wanted) and samples[wanted[0]] >= 5 else None

    samples = eventually(scrape, timeout=90, every=0.5)
    assert samples, "the model server's metrics never appeared on the node's metrics endpoint"
    assert samples[("ray_factory_serve_errors_total", "400", "")] >= 1


def test_traffic_changes_reach_every_replica_without_restarts_or_lost_requests(store, mlp_package, serve_url):
    """Under steady load, splits and shadows change what answers on both replicas; every request gets a 200."""
    import threading

    from factory.serve import TrafficConfig

    first, second = mlp_package(), mlp_package(seed=1)
    v1, v2 = version_of(first.digest), version_of(second.digest)
    deploy(store, first.digest, "dev", replicas=2, timeout_s=180)
    answers: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=serve_url, timeout=30) as http:
            while not stop.is_set():
                reply = http.post("/v2/models/iris/infer", json=infer_body(X[:1]))
                version = reply.json().get("model_version", "") if reply.status_code == 200 else ""
                answers.append((reply.status_code, version, reply.headers.get(REPLICA_HEADER, "")))

    def answering(wanted: set[str], at_least: int = 40):
        mark = len(answers)
        return eventually(lambda: len(answers) - mark >= at_least and
                          {v for _, v, _ in answers[mark:][-at_least:]} == wanted, timeout=60)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert answering({v1})
        eventually(lambda: len({r for _, _, r in answers}) == 2, timeout=60)
        replicas = {r for _, _, r in answers}
        set_traffic(store, "iris", {v1: 1, v2: 1}, versions=(second.digest,))
        assert answering({v1, v2})
        set_traffic(store, "iris", TrafficConfig(model="iris", generation=10, weights={v1: 0.0, v2: 100.0},
                                                 shadows={v1: 100.0}))
        assert answering({v2})
        set_traffic(store, "iris", None, versions=())
        assert answering({v1})
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert len(replicas) == 2 and {r for _, _, r in answers} == replicas  # no replica restarted
    # Each phase above waited for 40 answers of its own; how many more came is the machine's speed, not ours.
    assert [a for a in answers if a[0] != 200] == []


def test_admission_and_protected_refs_decide_what_deploy_may_serve(store, mlp_package, serve_url):
    """prod refuses a package gated for dev only, naming what it lacks; a protected env moves only for its actors."""
    import dataclasses

    from factory.errors import NotAdmittedError, RefProtectedError
    from factory.store import Store

    pkg, newer = mlp_package(), mlp_package(seed=1)
    with pytest.raises(NotAdmittedError, match="not admitted to prod") as refused:
        deploy(store, pkg.digest, "prod", timeout_s=180)
    assert {"model-card", "quality", "fairness", "drift"} <= {m.rsplit("/", 2)[-2] for m in refused.value.missing}
    assert store.refs.get("model/iris/prod") is None and read_record(store, "iris") is None

    controller = Store(store.home, settings=dataclasses.replace(store.settings, actor="factory-controller"))
    controller.refs.protect("model/*/dev", ["factory-controller"])
    with pytest.raises(RefProtectedError, match="moves only for the actors of rule 'model/\\*/dev'") as protected:
        deploy(store, pkg.digest, "dev", timeout_s=180)
    assert "a first version is deployed to dev by an actor the rule lists" in str(protected.value)
    assert read_record(store, "iris") is None
    deploy(controller, pkg.digest, "dev", timeout_s=180)
    again = deploy(store, pkg.digest, "dev", timeout_s=180)  # what the ref points at: anyone may serve it
    assert not again.restarted
    with pytest.raises(RefProtectedError, match="factory rollout start"):
        deploy(store, newer.digest, "dev", timeout_s=180)
    assert store.refs.get("model/iris/dev") == pkg.digest
    assert httpx.post(f"{serve_url}/v2/models/iris/infer", json=infer_body(), timeout=30).json()["model_version"] \
        == version_of(pkg.digest)
