"""The serving feature log: per-request rows through the buffered writer against one commit per row,
and ``find(request_id)`` through the BTREE index against a scan of the same log.

Writes: ``--rows`` rows (default 20 k; ``--quick`` 2 k), one per simulated request, each
timed at the caller (what a request waits for), then the writer closed (everything
committed). The peer is ``FeatureLog.append`` of one row per call, one Lance commit each
(the only way before the writer), timed on the first 1,000 rows. Lookups: a log of
``--log-rows`` rows (default 1 M; ``--quick`` 100 k) written in commits of 10 k rows and
optimized (compacted, indexed); the median of ``--lookups`` random ``find`` calls, against
the same filter with Lance's scalar index turned off (a scan).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime

import numpy as np

from benchmarks._util import machine, median, print_table


def _row(i: int, now: datetime) -> dict:
    return {"request_id": f"req-{i:09d}", "model": "sha256:" + "a" * 64, "ts": now, "user": i % 50_000,
            "amount": float(i % 997), "prediction": 0.5}


def _store(home: str):
    from factory.settings import Settings
    from factory.store import Store

    return Store(home, settings=Settings(home=home))


def writes(home: str, rows: int, per_commit_rows: int) -> dict[str, float]:
    """Per-request cost at the caller and overall throughput, writer against one commit per row."""
    import lance

    from factory.store.features import FeatureLog

    now = datetime.now(UTC)
    log = FeatureLog(_store(home), "writer")
    waits = np.empty(rows)
    start = time.perf_counter()
    with log.writer(flush_rows=1000, flush_seconds=1.0) as writer:
        for i in range(rows):
            t0 = time.perf_counter()
            writer.write(_row(i, now))
            waits[i] = time.perf_counter() - t0
    writer_s = time.perf_counter() - start
    commits = len(lance.dataset(log.uri).versions())

    single = FeatureLog(_store(home), "single")
    single_waits = np.empty(per_commit_rows)
    for i in range(per_commit_rows):
        t0 = time.perf_counter()
        single.append([_row(i, now)])
        single_waits[i] = time.perf_counter() - t0
    return {
        "writer_rows_per_s": rows / writer_s, "writer_commits": commits,
        "writer_p50_us": float(np.percentile(waits, 50) * 1e6), "writer_p99_us": float(np.percentile(waits, 99) * 1e6),
        "append_rows_per_s": per_commit_rows / single_waits.sum(),
        "append_p50_us": float(np.percentile(single_waits, 50) * 1e6),
        "append_p99_us": float(np.percentile(single_waits, 99) * 1e6),
    }


def lookups(home: str, log_rows: int, samples: int) -> dict[str, float]:
    """Median ``find`` on a big optimized log, and the same filter as a scan."""
    import lance
    import pyarrow as pa

    from factory.store.features import FeatureLog

    log = FeatureLog(_store(home), "big")
    now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    for start in range(0, log_rows, 10_000):
        ids = np.arange(start, min(start + 10_000, log_rows))
        log.append(pa.table({
            "request_id": pa.array([f"req-{i:09d}" for i in ids]), "model": pa.array(["m"] * len(ids)),
            "ts": pa.array([now] * len(ids)), "user": ids % 50_000, "amount": (ids % 997).astype(float),
            "prediction": np.full(len(ids), 0.5),
        }))
    t0 = time.perf_counter()
    log.optimize()
    optimize_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    wanted = [f"req-{i:09d}" for i in rng.integers(0, log_rows, samples)]
    found, scans = [], []
    for rid in wanted:
        t0 = time.perf_counter()
        assert log.find(rid).num_rows == 1
        found.append(time.perf_counter() - t0)
    ds = lance.dataset(log.uri)
    for rid in wanted[: max(3, samples // 10)]:
        t0 = time.perf_counter()
        assert ds.to_table(filter=f"request_id = '{rid}'", use_scalar_index=False).num_rows == 1
        scans.append(time.perf_counter() - t0)
    return {"optimize_s": optimize_s, "find_ms": median(found) * 1e3, "find_max_ms": max(found) * 1e3,
            "scan_ms": median(scans) * 1e3}


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 k writes, a log of 100 k rows")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--log-rows", type=int, default=None)
    parser.add_argument("--lookups", type=int, default=50)
    args = parser.parse_args(argv)
    rows = args.rows or (2_000 if args.quick else 20_000)
    log_rows = args.log_rows or (100_000 if args.quick else 1_000_000)
    print(f"{machine()}; {rows:,} per-request writes; find in a log of {log_rows:,} rows")
    home = tempfile.mkdtemp(prefix="bench-feature-log-")
    try:
        w = writes(home, rows, min(rows, 1000))
        f = lookups(home, log_rows, args.lookups)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print_table(
        "per-request feature logging",
        ["way", "rows/s", "caller p50 (us)", "caller p99 (us)", "Lance commits"],
        [["FeatureLog.writer().write (buffered)", w["writer_rows_per_s"], w["writer_p50_us"], w["writer_p99_us"],
          w["writer_commits"]],
         ["FeatureLog.append, one row per call", w["append_rows_per_s"], w["append_p50_us"], w["append_p99_us"],
          "one per row"]],
    )
    print_table(
        f"find(request_id) in a log of {log_rows:,} rows (median of {args.lookups})",
        ["way", "ms"],
        [["find (BTREE index)", f["find_ms"]], ["find, slowest", f["find_max_ms"]],
         ["same filter, index off (scan)", f["scan_ms"]], ["optimize (compact + index), s", f["optimize_s"]]],
    )
    write_ratio = w["writer_rows_per_s"] / w["append_rows_per_s"]
    find_ratio = f["scan_ms"] / f["find_ms"]
    print(f"find: {f['find_ms']:.1f} ms median (goal < 1000 ms on 1 M requests); writer p99 at the caller "
          f"{w['writer_p99_us']:.0f} us")
    print(f"buffered writer vs one commit per row: {write_ratio:.0f}x the rows/s; find vs scan: {find_ratio:.0f}x faster")
    return {"rows": rows, "log_rows": log_rows, **w, **f, "writer_vs_append": write_ratio, "find_vs_scan": find_ratio}


if __name__ == "__main__":
    main()
