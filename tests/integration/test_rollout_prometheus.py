"""A real Prometheus scrapes the model servers' metrics; the PromQL signals equal the in-process ones."""

from __future__ import annotations

import os
import random
import time

import httpx
import pytest
from _servers import PROMETHEUS, PrometheusServer, free_port

from factory.serve import ClientRecorder, FanOut, MemorySignals, OutcomeBook, PrometheusSignals, RecorderSink
from factory.serve._signals import VersionFigures

INC, CAND = "111111111111", "222222222222"


@pytest.fixture
def exporter():
    """A small exporter serving per-version counters and histograms under the model server's names (ray_*)."""
    from prometheus_client import start_http_server

    recorder = ClientRecorder(prefix="ray_")
    recorder.declare("iris", [INC, CAND], codes=(200, 404, 500), outputs=["label", "score"])
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=recorder.registry)
    yield recorder, f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def prometheus(exporter, tmp_path):
    if not os.path.exists(PROMETHEUS):
        pytest.fail(f"{PROMETHEUS} is missing: run 'make services' to install Debian's prometheus")
    server = PrometheusServer.start([exporter[1]], str(tmp_path))
    yield server
    server.stop()


def _samples(url: str, promql: str) -> list[tuple[float, float]]:
    """The raw (timestamp, value) samples of one series over the last five minutes."""
    body = httpx.get(f"{url}/api/v1/query", params={"query": f"{promql}[5m]"}, timeout=10).json()
    result = body["data"]["result"]
    return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def _wait(condition, timeout_s: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("Prometheus did not scrape the exporter in time")


def _traffic(sink, rng: random.Random) -> None:
    """What two model server versions, a shadower and reporting clients would record."""
    for version, n, error_rate, scale in ((INC, 400, 0.01, 15.0), (CAND, 200, 0.05, 60.0)):
        for _ in range(n):
            code = 500 if rng.random() < error_rate else (404 if rng.random() < 0.02 else 200)
            sink.record_request("iris", version, code, rng.expovariate(1 / scale))
    for _ in range(150):
        same = int(rng.random() < 0.9)
        sink.record_comparison("iris", CAND, agreed={"label": (same + 1, 2)},
                               abs_diff={"score": (rng.random() * 0.2, 2)})
    for version in (INC, CAND):
        labels, etas = OutcomeBook("iris", sink, output="label"), OutcomeBook("iris", sink, output="eta")
        for i in range(60):
            outputs = {"label": [i % 2], "eta": [10.0 + i]}
            labels.answered(f"{version}-{i}", version, outputs)
            etas.answered(f"{version}-{i}", version, outputs)
            observed = i % 2 if rng.random() < 0.8 else 1 - i % 2
            labels.report(f'{{"id": "{version}-{i}", "label": {observed}}}'.encode())
            etas.report(f'{{"id": "{version}-{i}", "value": {10.0 + i + rng.gauss(0, 2):.3f}}}'.encode())

def test_promql_signals_equal_the_in_process_ones(exporter, prometheus):
    """Requests, errors, p99, shadow agreement and outcomes per version read the same from either source."""
    recorder, _ = exporter
    memory = MemorySignals()
    series = 'ray_factory_serve_requests_total{model="iris",version="111111111111",code="200"}'
    _wait(lambda: _samples(prometheus.url, series))  # the zeros were scraped: the window starts on a sample
    _traffic(FanOut(memory, RecorderSink(recorder)), random.Random(7))
    samples = _wait(lambda: (s := _samples(prometheus.url, series)) and s[-1][1] > 0 and s)
    start = max(t for t, v in samples if v == 0)  # the last scrape before the traffic
    end = min(t for t, v in samples if v > 0)  # the first scrape after it: the window's edges are samples

    promql = PrometheusSignals(prometheus.url)
    try:
        remote = promql.figures("iris", [INC, CAND], start, end)
    finally:
        promql.close()
    local = memory.figures("iris", [INC, CAND], start, end)
    for version in (INC, CAND):
        _same(remote[version], local[version])
    assert local[INC].requests == 400 and local[CAND].requests == 200 and local[CAND].errors > local[INC].errors
    assert local[CAND].compared == 150 and local[INC].label_outcomes == local[INC].value_outcomes == 60
    assert local[CAND].p99_ms > local[INC].p99_ms and 0.5 < local[CAND].agreement["label"] < 1


def _same(remote: VersionFigures, local: VersionFigures) -> None:
    for name in ("requests", "errors", "compared", "label_outcomes", "value_outcomes"):
        assert getattr(remote, name) == pytest.approx(getattr(local, name), rel=1e-9), name
    for name in ("p99_ms", "accuracy", "mean_abs_error"):
        a, b = getattr(remote, name), getattr(local, name)
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9), (name, a, b)
    assert remote.agreement.keys() == local.agreement.keys()
    for output, value in local.agreement.items():
        assert remote.agreement[output] == pytest.approx(value, rel=1e-9)
    for output, value in local.mean_abs_diff.items():
        assert remote.mean_abs_diff[output] == pytest.approx(value, rel=1e-9)


def test_an_unreachable_prometheus_is_a_retryable_error():
    """A Prometheus that is down raises SignalsUnavailableError, which the rollout treats as 'wait'."""
    from factory.errors import SignalsUnavailableError

    promql = PrometheusSignals(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(SignalsUnavailableError, match="cannot query Prometheus"):
        promql.figures("iris", [INC], 0, 10)


def test_prometheus_scrapes_the_model_servers_and_answers_the_rollouts_promql(store, mlp_package, serve_url,
                                                                               tmp_path):
    """Prometheus scraping the Ray node of a real model server (two versions, 50/50) counts, per version, exactly
    the requests each answered in a window, with their p99: what a rollout's analysis reads."""
    import ray

    from factory.serve import deploy, set_traffic, version_of

    if not os.path.exists(PROMETHEUS):
        pytest.fail(f"{PROMETHEUS} is missing: run 'make services' to install Debian's prometheus")
    # A model name of its own: the node still exports the series of earlier tests' replicas of the iris
    # model (the same package digests give the same version labels), which this test's counts must not meet.
    name = "iris-promql"
    first, second = mlp_package(name=name), mlp_package(seed=1, name=name)
    done = deploy(store, first.digest, "dev", timeout_s=180)
    versions = [version_of(first.digest), version_of(second.digest)]
    set_traffic(store, name, dict.fromkeys(versions, 50.0), versions=(second.digest,), reason="two versions")
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}
    answered = dict.fromkeys(versions, 0)

    def send(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(n):
                reply = http.post(done.url + "/infer", json=body)
                assert reply.status_code == 200, reply.text
                answered[reply.json()["model_version"]] += 1

    def settled() -> dict[str, list[tuple[float, float]]] | None:
        """Each version's samples once the last one shows every request it answered (the edges are samples)."""
        series = {v: _samples(server.url, f'ray_factory_serve_requests_total{{model="{name}",version="{v}",code="200"}}')
                  for v in versions}
        return series if all(s and s[-1][1] == answered[v] for v, s in series.items()) else None

    port = ray.nodes()[0]["MetricsExportPort"]
    server = PrometheusServer.start([f"127.0.0.1:{port}"], str(tmp_path))
    try:
        while min(answered.values()) == 0:  # both versions' series exist before the window opens
            send(4)
        before = _wait(settled, timeout_s=120)
        counted = dict(answered)
        start = max(s[-1][0] for s in before.values())
        send(40)
        after = _wait(settled, timeout_s=120)
        end = max(min(t for t, value in s if value == answered[v]) for v, s in after.items())
        promql = PrometheusSignals(server.url)
        try:
            figures = promql.figures(name, versions, start, end)
        finally:
            promql.close()
    finally:
        server.stop()
    for v in versions:
        assert figures[v].requests == pytest.approx(answered[v] - counted[v], rel=1e-9), (v, figures[v])
        assert figures[v].errors == 0 and figures[v].p99_ms is not None and figures[v].p99_ms > 0
    assert sum(f.requests for f in figures.values()) == 40
