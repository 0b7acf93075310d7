"""The pure parts of serving: hand-written splits, records, following the store, log rows, paths, OpenAPI."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from factory.contract import Contract, DType, InputSpec, OutputSpec, check_request
from factory.errors import InvalidInputError
from factory.serve import InferenceLog, LogRecord, TrafficConfig, example_request, openapi, split
from factory.serve._follow import Follower
from factory.serve._log import log_rows
from factory.serve._oip import Route, parse_route
from factory.serve._record import DeploymentRecord, ServeState

WEIGHTS = st.dictionaries(st.text("0123456789abcdef", min_size=12, max_size=12),
                          st.integers(0, 100), min_size=1, max_size=4).filter(lambda w: sum(w.values()) > 0)


@given(weights=WEIGHTS)
def test_hand_written_weights_become_shares_in_percent(weights):
    """An operator's split (any non-negative numbers) is each version's share of 100 %, summing to 100."""
    config = split("m", weights, generation=3)
    total = sum(weights.values())
    assert config.generation == 3 and abs(sum(config.weights.values()) - 100) < 1e-6
    for version, weight in weights.items():
        assert config.weights[version] == pytest.approx(100 * weight / total, abs=1e-6)


def test_a_split_with_no_weight_or_a_negative_one_is_refused():
    """All-zero or negative weights are refused, saying what to give instead."""
    with pytest.raises(InvalidInputError, match="every traffic weight is 0"):
        split("m", {"a" * 12: 0}, generation=1)
    with pytest.raises(InvalidInputError, match="give a number >= 0"):
        split("m", {"a" * 12: -1, "b" * 12: 2}, generation=1)


def test_records_refuse_contradictory_settings():
    """replicas with autoscale, a bad range, a bad env or another model's traffic are refused with the reason."""
    with pytest.raises(ValueError, match="either replicas or autoscale"):
        DeploymentRecord(name="m", model="m", env="dev", replicas=2, autoscale=(1, 3))
    with pytest.raises(ValueError, match="MIN,MAX"):
        DeploymentRecord(name="m", model="m", env="dev", autoscale=(3, 1))
    with pytest.raises(ValueError, match="not an environment name"):
        DeploymentRecord(name="m", model="m", env="Prod!")
    with pytest.raises(ValueError, match="for model 'other'"):
        DeploymentRecord(name="m", model="m", env="dev", traffic=TrafficConfig.single("other", "a" * 12, 1))


def test_a_replica_routes_all_to_the_environment_while_traffic_names_a_version_it_does_not_hold():
    """Mid-promotion (the ref moved, the record not yet), unversioned requests go to the environment's package."""
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    config = TrafficConfig(model="m", generation=2, weights={"a" * 12: 0.0, "b" * 12: 100.0},
                           shadows={"a" * 12: 10.0})
    held = ServeState(DeploymentRecord(name="m", model="m", env="dev", versions=(b,), traffic=config), "r", a)
    assert held.traffic() == config
    moved = ServeState(DeploymentRecord(name="m", model="m", env="dev", traffic=config), "r", a)
    assert moved.traffic() is None
    shadow_gone = ServeState(DeploymentRecord(name="m", model="m", env="dev", traffic=config), "r", b)
    assert shadow_gone.traffic().shadows == {} and shadow_gone.traffic().weights == config.weights


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


def test_a_state_that_cannot_be_applied_is_reported_on_one_line_naming_each_problem():
    """A package failing two checks: the replica's error (in 404 notes and in deploy's failure) names both."""
    from factory.errors import ContractViolationError

    errors = []
    problem = ContractViolationError("cannot load package p: 2 problem(s)\n  - package.blobs: expected intact "
                                     "weights, got CorruptBlobError (x)\n  - weights: expected y, got z (w)")
    follower = Follower(lambda: (_ for _ in ()).throw(problem), lambda s: None, key=0, poll_s=0.01,
                        on_error=errors.append)
    follower.start()
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    follower.stop()
    assert errors == ["ContractViolationError: cannot load package p: 2 problem(s); package.blobs: expected intact "
                      "weights, got CorruptBlobError (x); weights: expected y, got z (w)"]


CONTRACT = Contract(name="m", inputs=(InputSpec(name="x", dtype=DType.FP32, shape=(-1, 2)),),
                    outputs=(OutputSpec(name="y", dtype=DType.FP32, shape=(-1,)),))


def record(rid="r", rows=2, x=None):
    x = np.ones((rows, 2), np.float32) if x is None else x
    return LogRecord(rid, "sha256:" + "a" * 64, "a" * 12, CONTRACT, datetime.now(UTC), 1.5,
                     {"x": x}, {"y": np.zeros(rows, np.float32)})


class Writer:
    """A stand-in for FeatureLog.writer: takes ``capacity`` rows, then refuses; loses ``lost`` of them later."""

    def __init__(self, capacity=100, lost=0):
        self.capacity = capacity
        self.rows = []
        self.refused = 0
        self.lost = lost

    def write(self, row):
        if len(self.rows) >= self.capacity:
            self.refused += 1
            return False
        self.rows.append(row)
        return True

    def stats(self):
        from factory.store.features._log_writer import WriterStats

        return WriterStats(accepted=len(self.rows) + self.refused, written=len(self.rows) - self.lost,
                           dropped=self.refused + self.lost, rejected=0, commits=1, errors=0, pending=0)


def test_a_request_becomes_one_log_row_per_input_row_with_nulls_kept():
    """Each input row is logged with the request id, its index, the digest, the inputs and a prediction struct."""
    x = np.array([[1.0, np.nan], [3.0, 4.0]], np.float32)
    rows = log_rows(record("req-9", x=x))
    assert [r["row"] for r in rows] == [0, 1] and {r["request_id"] for r in rows} == {"req-9"}
    assert rows[0]["x"] == [1.0, None] and rows[1]["x"] == [3.0, 4.0]
    assert rows[1]["prediction"] == {"y": 0.0} and rows[0]["model"] == "sha256:" + "a" * 64


def test_rows_the_writer_refuses_or_loses_are_counted_as_dropped():
    """A full writer refuses rows (dropped, by version); rows it loses later are dropped under version ''."""
    written, dropped = [], []
    writer = Writer(capacity=3)
    ilog = InferenceLog(writer, on_written=lambda v, n: written.append((v, n)),
                        on_dropped=lambda v, n: dropped.append((v, n)))
    assert ilog.submit(record(rows=2)) == 2 and ilog.submit(record(rows=2)) == 1
    assert written == [("a" * 12, 2), ("a" * 12, 1)] and dropped == [("a" * 12, 1)]
    writer.lost = 2
    assert ilog.settle() == 2 and dropped[-1] == ("", 2)
    assert ilog.settle() == 0


def test_a_logged_request_reads_back_by_its_id_through_the_real_writer(store):
    """Rows handed to a real FeatureLog writer are committed off the caller's thread and found by request id."""
    from factory.store import FeatureLog

    feature_log = FeatureLog(store, "inference-m")
    ilog = InferenceLog(feature_log.writer(flush_rows=100, flush_seconds=0.05))
    ilog.submit(record("find-me", rows=3))
    ilog.submit(record("other", rows=1))
    assert ilog.flush(30)
    found = feature_log.find("find-me").to_pylist()
    assert sorted(r["row"] for r in found) == [0, 1, 2] and {r["version"] for r in found} == {"a" * 12}
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
    assert ("GET", "/v2/health/ready") in operations and ("POST", "/v2/models/{model_name}/outcomes") in operations
    assert len(operations) == 10


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
