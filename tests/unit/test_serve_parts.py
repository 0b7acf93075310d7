"""The pure parts of serving: routing by weight, following the store, the log buffer, paths, OpenAPI."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.contract import Contract, DType, InputSpec, OutputSpec, check_request
from factory.errors import InvalidInputError
from factory.serve import InferenceLog, LogRecord, choose, example_request, openapi
from factory.serve._follow import Follower
from factory.serve._oip import Route, parse_route
from factory.serve._record import DeploymentRecord

VERSIONS = st.dictionaries(st.text("0123456789abcdef", min_size=12, max_size=12),
                           st.integers(1, 100), min_size=1, max_size=4)


@settings(max_examples=50, deadline=None)
@given(weights=VERSIONS)
def test_shares_follow_the_weights(weights):
    """Over many request keys each version gets about its share of the total weight."""
    n = 4000
    counts = Counter(choose(weights, f"request-{i}") for i in range(n))
    total = sum(weights.values())
    for version, weight in weights.items():
        assert abs(counts[version] / n - weight / total) < 0.04


@given(weights=VERSIONS, key=st.text(max_size=20))
def test_the_same_key_lands_on_the_same_version(weights, key):
    """Routing is a function of the key and the weights: a sticky key never flaps."""
    assert choose(weights, key) == choose(dict(reversed(list(weights.items()))), key)


def test_a_zero_weight_never_gets_traffic():
    """A version at weight 0 (a rolled-back canary) receives no request."""
    assert {choose({"a" * 12: 1.0, "b" * 12: 0.0}, str(i)) for i in range(500)} == {"a" * 12}


def test_records_refuse_contradictory_settings():
    """replicas with autoscale, a bad range or too many versions are refused with the reason."""
    with pytest.raises(ValueError, match="either replicas or autoscale"):
        DeploymentRecord(name="m", model="m", env="dev", replicas=2, autoscale=(1, 3))
    with pytest.raises(ValueError, match="MIN,MAX"):
        DeploymentRecord(name="m", model="m", env="dev", autoscale=(3, 1))
    with pytest.raises(ValueError, match="not an environment name"):
        DeploymentRecord(name="m", model="m", env="Prod!")
    with pytest.raises(ValueError, match="every traffic weight is 0"):
        DeploymentRecord(name="m", model="m", env="dev", traffic={"a" * 12: 0})


class State:
    def __init__(self, key):
        self.key = key


def test_the_follower_applies_changes_once_and_survives_errors():
    """A new state is applied once; a failing read keeps the last state and is retried."""
    states = [State(1), State(1), RuntimeError("store down"), State(2)]
    applied = []

    def read():
        item = states.pop(0) if states else State(2)
        if isinstance(item, Exception):
            raise item
        return item

    follower = Follower(read, lambda s: applied.append(s.key), key=0, poll_s=0.01)
    follower.start()
    deadline = time.monotonic() + 10
    while applied != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    follower.stop()
    assert applied == [1, 2] and follower.error is None


CONTRACT = Contract(name="m", inputs=(InputSpec(name="x", dtype=DType.FP32, shape=(-1, 2)),),
                    outputs=(OutputSpec(name="y", dtype=DType.FP32, shape=(-1,)),))


def record(rid="r", rows=2):
    return LogRecord(rid, "sha256:" + "a" * 64, "a" * 12, CONTRACT, datetime.now(UTC), 1.5,
                     {"x": np.ones((rows, 2), np.float32)}, {"y": np.zeros(rows, np.float32)})


def test_submit_never_waits_for_a_slow_store_and_drops_when_full():
    """While the store is stuck, requests go on: rows beyond the buffer are dropped and counted."""
    release = threading.Event()
    written = []

    def slow_write(table):
        release.wait(10)
        written.append(table.num_rows)
        return table.num_rows

    dropped = []
    ilog = InferenceLog(slow_write, capacity_rows=4, flush_rows=2, flush_interval_s=0.01,
                        on_dropped=lambda version, rows: dropped.append(rows))
    ilog.submit(record("first"))
    time.sleep(0.2)  # the thread is now inside slow_write
    start = time.monotonic()
    accepted = [ilog.submit(record(f"r{i}")) for i in range(5)]
    assert time.monotonic() - start < 1.0
    assert accepted == [True, True, False, False, False] and sum(dropped) == 6
    release.set()
    assert ilog.flush(10)
    ilog.close()
    assert sum(written) == 6 and ilog.written == 6


def test_a_failing_store_costs_log_rows_not_requests():
    """A writer that raises loses those rows (counted) and the log keeps accepting."""
    ilog = InferenceLog(lambda table: 1 / 0, flush_interval_s=0.01)
    assert ilog.submit(record())
    assert ilog.flush(10)
    assert ilog.dropped == 2 and ilog.submit(record())
    ilog.close()


@pytest.mark.parametrize(("path", "route"), [
    ("/v2/models/iris", Route("iris", None, "metadata")),
    ("/v2/models/iris/", Route("iris", None, "metadata")),
    ("/v2/models/iris/ready", Route("iris", None, "ready")),
    ("/v2/models/iris/versions/abc/infer", Route("iris", "abc", "infer")),
    ("/v2/models/iris/versions/abc", Route("iris", "abc", "metadata")),
    ("/v2/models/iris/explain", None),
    ("/v2/models", None),
])
def test_paths_parse_as_oip_routes(path, route):
    """Each OIP model path maps to its model, version and verb; anything else is not a route."""
    assert parse_route(path) == route


def test_the_curl_example_is_a_request_the_contract_accepts():
    """The request that deploy prints passes the contract's own check."""
    contract = Contract(name="m", inputs=(InputSpec(name="x", dtype=DType.FP32, shape=(-1, 3)),
                                          InputSpec(name="s", dtype=DType.BYTES, shape=(-1, -1)),
                                          InputSpec(name="b", dtype=DType.BOOL, shape=(-1,))),
                        outputs=(OutputSpec(name="y", dtype=DType.FP32, shape=(-1,)),))
    inputs = check_request(contract, example_request(contract))
    assert inputs["x"].shape == (1, 3) and inputs["s"].tolist() == [[b"x"]]


def test_the_openapi_document_is_valid_openapi():
    """The served description loads in schemathesis and covers every OIP endpoint."""
    import schemathesis

    doc = openapi()
    schema = schemathesis.openapi.from_dict(doc)
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert ("POST", "/v2/models/{model_name}/infer") in operations
    assert ("GET", "/v2/health/ready") in operations and len(operations) == 9


def test_settings_refuse_a_bad_port():
    """FACTORY_SERVE_PORT that is not a positive number is a one-line user error."""
    from factory.settings import Settings

    with pytest.raises(InvalidInputError, match="FACTORY_SERVE_PORT='http' is not a positive integer"):
        Settings.from_env({"FACTORY_SERVE_PORT": "http"})


def test_replica_settings_come_from_the_contract_and_the_deployment():
    """CPUs, GPUs and memory come from the contract; replica count or autoscaling from the deployment."""
    from factory.contract import Resources
    from factory.serve._deploy import _serve_options

    contract = CONTRACT.model_copy(update={"resources": Resources(cpus=0.25, memory_mb=300, max_batch_size=16)})
    fixed = _serve_options(contract, DeploymentRecord(name="m", model="m", env="dev", replicas=3))
    assert fixed["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.0, "memory": 300 * 2**20}
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] >= 16
    scaled = _serve_options(contract, DeploymentRecord(name="m", model="m", env="dev", autoscale=(1, 4)))
    assert "num_replicas" not in scaled
    assert (scaled["autoscaling_config"]["min_replicas"], scaled["autoscaling_config"]["max_replicas"]) == (1, 4)
