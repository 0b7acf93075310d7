"""``factory trace``: a request id to its model, gates, run and data, on an inference log of 1 M requests.

The store holds a real lineage (source datasets, two feature views, a point-in-time
training set, a config, code and environment records, a packaged model gated with the
dev set) and the model's inference log with ``--log-rows`` rows (default 1 M; ``--quick``
100 k) in serving's layout, appended in commits of 10 k rows as serving does, never
indexed by the writer. Measured: the first trace (which builds the ``request_id`` index),
then the median of ``--lookups`` traces of random request ids, against the peer: the
same trace with the lookup as a scan of the log (Lance's scalar index off). Goal: < 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime

import numpy as np

from benchmarks._util import machine, median, print_table


def _history(home: str):
    """A store with a traced model and its deployment record; the model digest."""
    from factory.contract import Contract, Resources, default_registry, package
    from factory.gates import run_gate
    from factory.runtime._demo_data import ACTIVITY, ENTITY, PROFILE, TTL, generate
    from factory.serve._record import DeploymentRecord, write_record
    from factory.settings import Settings
    from factory.store import Store
    from factory.store.features import FeatureView

    store = Store(home, settings=Settings(home=home, actor="factory-controller"))
    book = generate(100, 300, seed=1)
    profiles = store.datasets.add(book.profiles, name="customer-profiles", key=[ENTITY, "ts"])
    activity = store.datasets.add(book.activity, name="card-activity", key=[ENTITY, "ts"])
    apps = store.datasets.add(book.applications, name="applications", key=["application_id"])
    for name, features, source in (("customer-profile", PROFILE, profiles), ("card-activity", ACTIVITY, activity)):
        store.features.register(FeatureView(name=name, entities=(ENTITY,), timestamp="ts", ttl=TTL,
                                            features=features, source=source.digest))
    joined = store.features.get_historical_features(apps.digest, ["customer-profile", "card-activity"],
                                                    timestamp="ts", name="credit-training").version.digest
    config = store.artifacts.add("training-config", name="bench", parents=[joined], metadata={"seed": 1}).digest
    arch = {"in_features": 5, "out_features": 2, "hidden": [8]}
    signature = default_registry().get("mlp-classifier").expected(arch)
    contract = Contract(name="bench", inputs=signature.inputs, outputs=signature.outputs,
                        resources=Resources(cpus=0.1, memory_mb=256, max_batch_size=8))
    model = package(store, default_registry().build("mlp-classifier", arch, seed=0), contract,
                    parents=[config, joined]).digest
    run_gate(store, model, "dev", parallel=False)
    write_record(store, DeploymentRecord(name="bench", model="bench", env="prod"), expected=None, reason="bench")
    return store, model


def _fill(store, model: str, rows: int) -> None:
    """``rows`` single-row requests in serving's log layout, in commits of 10 k rows."""
    import pyarrow as pa

    from factory.store.features import FeatureLog

    log = FeatureLog(store, "inference-bench")
    now = int(datetime.now(UTC).timestamp() * 1e6)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 10_000):
        ids = np.arange(start, min(start + 10_000, rows))
        n = len(ids)
        features = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 5, dtype=np.float32)), 5)
        log.append(pa.table({
            "request_id": pa.array([f"req-{i:09d}" for i in ids]), "row": pa.array(np.zeros(n, np.int32)),
            "model": pa.array([model] * n), "version": pa.array([model[7:19]] * n),
            "ts": pa.array(now + ids, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "latency_ms": pa.array(rng.random(n) * 5), "features": features,
            "prediction": pa.StructArray.from_arrays([pa.array(ids % 2)], names=["label"]),
        }))


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a log of 100 k requests")
    parser.add_argument("--log-rows", type=int, default=None)
    parser.add_argument("--lookups", type=int, default=20)
    args = parser.parse_args(argv)
    rows = args.log_rows or (100_000 if args.quick else 1_000_000)
    print(f"{machine()}; trace in an inference log of {rows:,} requests")
    home = tempfile.mkdtemp(prefix="bench-trace-")
    try:
        import factory.runtime._trace as tracing

        store, model = _history(home)
        _fill(store, model, rows)
        t0 = time.perf_counter()
        assert tracing.trace(store, "req-000000000").model["digest"] == model
        first_s = time.perf_counter() - t0
        wanted = [f"req-{i:09d}" for i in np.random.default_rng(1).integers(0, rows, args.lookups)]
        indexed = []
        for rid in wanted:
            t0 = time.perf_counter()
            assert tracing.trace(store, rid).rows[0]["request_id"] == rid
            indexed.append(time.perf_counter() - t0)
        scans = []
        original = tracing._lookup
        tracing._lookup = lambda flog, rid: tracing._scan(flog, rid)  # the peer: no index
        try:
            for rid in wanted[: max(3, args.lookups // 4)]:
                t0 = time.perf_counter()
                assert tracing.trace(store, rid).rows[0]["request_id"] == rid
                scans.append(time.perf_counter() - t0)
        finally:
            tracing._lookup = original
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result = {"log_rows": rows, "first_trace_s": first_s, "trace_ms": median(indexed) * 1e3,
              "trace_max_ms": max(indexed) * 1e3, "scan_trace_ms": median(scans) * 1e3}
    print_table(f"factory trace on {rows:,} logged requests", ["way", "ms"],
                [["trace, request_id indexed (median)", result["trace_ms"]],
                 ["trace, slowest", result["trace_max_ms"]],
                 ["trace with the lookup as a scan (median)", result["scan_trace_ms"]],
                 ["first trace (builds the index), s", first_s]])
    ratio = result["scan_trace_ms"] / result["trace_ms"]
    print(f"trace: {result['trace_ms']:.0f} ms median (goal < 1000 ms on 1 M requests)")
    print(f"indexed trace vs scan: {ratio:.1f}x faster")
    return {**result, "indexed_vs_scan": ratio}


if __name__ == "__main__":
    main()
