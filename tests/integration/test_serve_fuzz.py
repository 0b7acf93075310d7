"""Fuzzing the OIP endpoints over HTTP: whatever a client sends, no 5xx and no replica goes down."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.serve import deploy
from factory.serve._app import REPLICA_HEADER

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)
GOOD_INPUT = {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1, 2, 3]}


@pytest.fixture
def iris(store, mlp_package, serve_url):
    """The iris classifier served in dev, with the replica that answers it."""
    done = deploy(store, mlp_package().digest, "dev", timeout_s=180)
    replica = httpx.get(done.url + "/ready", timeout=30).headers[REPLICA_HEADER]
    return done, replica


def bodies():
    """Raw bytes, arbitrary JSON, and OIP requests with one field of one input replaced by anything."""
    mutated = st.builds(
        lambda key, value, extra: json.dumps({"inputs": [{**GOOD_INPUT, key: value}, *extra]}, allow_nan=True),
        st.sampled_from(["name", "datatype", "shape", "data", "parameters"]), JSON_VALUES,
        st.lists(st.dictionaries(st.sampled_from(["name", "datatype", "shape", "data"]), JSON_VALUES), max_size=2))
    shapes = st.builds(lambda shape, n: json.dumps({"inputs": [{**GOOD_INPUT, "shape": shape, "data": [0.0] * n}]}),
                       st.lists(st.integers(0, 70), max_size=4), st.integers(0, 300))
    return st.one_of(st.binary(max_size=300), JSON_VALUES.map(json.dumps), mutated, shapes)


def test_fuzzed_infer_bodies_never_get_a_5xx(iris):
    """Malformed JSON, wrong shapes and datatypes, nulls and junk all get 2xx or 4xx, from the same replica."""
    done, replica = iris
    statuses = []
    with httpx.Client(timeout=60) as http:

        @FUZZ
        @given(body=bodies(), binary_header=st.none() | st.integers(-5, 400))
        def check(body, binary_header):
            headers = {} if binary_header is None else {"inference-header-content-length": str(binary_header)}
            raw = body.encode() if isinstance(body, str) else body
            reply = http.post(done.url + "/infer", content=raw, headers=headers)
            statuses.append(reply.status_code)
            assert reply.status_code < 500, reply.text
            if reply.status_code >= 400:
                assert reply.json()["error"]

        check()
        assert http.post(done.url + "/infer", json={"inputs": [GOOD_INPUT]}).status_code == 200
        huge = http.post(done.url + "/infer", content=b"[" * (20 * 2**20))
        assert huge.status_code == 413
        assert http.get(done.url + "/ready").headers[REPLICA_HEADER] == replica
    assert 400 in statuses


def test_schemathesis_finds_no_server_error(iris, serve_url):
    """Requests generated from /v2/openapi.json (valid and invalid, any model name) never get a 5xx."""
    import schemathesis
    from schemathesis import GenerationMode

    done, replica = iris
    schema = schemathesis.openapi.from_url(f"{serve_url}/v2/openapi.json")
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(mode))
            names = {"model_name": "iris"}
            if "model_version" in operation.path:
                names["model_version"] = done.version
            strategies.append(operation.as_strategy(mode, path_parameters=names))

    @FUZZ
    @given(case=st.one_of(strategies))
    def check(case):
        response = case.call(base_url=serve_url, timeout=60)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"

    check()
    assert httpx.get(done.url + "/ready", timeout=30).headers[REPLICA_HEADER] == replica
