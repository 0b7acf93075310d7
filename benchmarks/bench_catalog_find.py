"""``artifacts.find`` by a metadata field among 100 k artifacts: the catalog index against a scan.

100 k attestation records (a subject digest, a policy, a verdict) are written as record
blobs and indexed as ``artifacts.add`` indexes them, a thousand per transaction to keep
the set-up short. Then, for subjects picked at random, ``find(kind="attestation",
where={"subject": S})`` (served by the field index) is timed against the scan it
replaces: read every attestation record and keep those whose subject is S (what a
caller had to do before ``where`` existed). Also timed: a broad match with a limit.
Goal: the indexed find <= 5 ms median.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks._util import machine, median, print_table, time_call

_BATCH = 1000
_POLICIES = ["quality", "fairness", "security-scan", "drift", "contract", "skew", "latency", "license"]


def _subject(i: int) -> str:
    return f"sha256:{i:064x}"


def _populate(store, count: int) -> None:
    """``count`` attestation records, stored and indexed exactly as ``artifacts.add`` would."""
    from factory._version import code_version
    from factory.store._digest import sha256_digest
    from factory.store._fields import indexed_fields
    from factory.store.artifacts import Artifact
    from factory.store.catalog import IndexedArtifact

    start = datetime(2026, 1, 1, tzinfo=UTC)
    producer = code_version()
    for first in range(0, count, _BATCH):
        rows = []
        for i in range(first, min(first + _BATCH, count)):
            meta = {"subject": _subject(i), "policy": _POLICIES[i % len(_POLICIES)], "passed": i % 7 != 0}
            digest = sha256_digest(f"envelope {i}".encode())
            record = Artifact(kind="attestation", digest=digest, name=f"att-{i}", metadata=meta,
                              created_at=start + timedelta(seconds=i), producer=producer)
            entry = IndexedArtifact(digest, "attestation", record.name, store.blobs.put_bytes(record.to_json()),
                                    record.created_at.isoformat())
            rows.append((entry, indexed_fields(meta)))
        # One transaction per batch (artifacts.add makes one per artifact, which only the set-up would feel).
        with store.catalog._connect(write=True) as db:
            for entry, fields in rows:
                store.catalog._insert_artifact(db, entry, [], fields)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 k artifacts instead of 100 k")
    parser.add_argument("--count", type=int, default=None, help="artifacts (default 100 k, --quick 10 k)")
    parser.add_argument("--queries", type=int, default=200, help="indexed finds to time")
    parser.add_argument("--scans", type=int, default=3, help="full scans to time")
    args = parser.parse_args(argv)
    count = args.count or (10_000 if args.quick else 100_000)

    from factory.settings import Settings
    from factory.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-find-"))
    try:
        store = Store(work / "home", settings=Settings(home=str(work / "home")))
        start = time.perf_counter()
        _populate(store, count)
        setup_s = time.perf_counter() - start
        rng = random.Random(0)
        subjects = [_subject(rng.randrange(count)) for _ in range(args.queries)]
        found = store.artifacts.find("attestation", where={"subject": subjects[0]})
        assert [a.metadata["subject"] for a in found] == [subjects[0]]

        queries = iter(subjects)
        indexed = time_call(lambda: store.artifacts.find("attestation", where={"subject": next(queries)}),
                            repeat=args.queries)
        broad = time_call(lambda: store.artifacts.find("attestation", where={"policy": "drift", "passed": False},
                                                       limit=20), repeat=max(20, args.queries // 10))

        def scan() -> None:
            wanted = subjects[rng.randrange(len(subjects))]
            hits = [a for a in store.artifacts.find("attestation") if a.metadata.get("subject") == wanted]
            assert len(hits) == 1

        scans = time_call(scan, repeat=args.scans)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms = 1000.0
    print(f"{count:,} attestation artifacts (set-up {setup_s:.1f} s), on {machine()}")
    print_table(
        "find one attestation by subject (ms)",
        ["query", "runs", "median", "min", "max"],
        [
            ("find(where={'subject': S}), indexed", len(indexed), median(indexed) * ms, min(indexed) * ms,
             max(indexed) * ms),
            ("find(where={'policy', 'passed'}, limit=20), indexed", len(broad), median(broad) * ms,
             min(broad) * ms, max(broad) * ms),
            ("scan: read every record, keep subject == S", len(scans), median(scans) * ms, min(scans) * ms,
             max(scans) * ms),
        ],
    )
    ratio = median(scans) / median(indexed)
    print(f"indexed find median: {median(indexed) * ms:.2f} ms (goal <= 5 ms)")
    print(f"scan / indexed find: {ratio:.0f}x")
    return {
        "artifacts": count,
        "indexed_find_median_ms": median(indexed) * ms,
        "broad_find_limit_20_median_ms": median(broad) * ms,
        "scan_median_ms": median(scans) * ms,
        "scan_over_indexed": ratio,
    }


if __name__ == "__main__":
    main()
