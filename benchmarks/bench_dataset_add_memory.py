"""Peak memory of adding version N+1 (1 % more rows) to a dataset of 10 M rows.

Each measurement is a fresh process whose peak RSS is read from ``getrusage`` when it ends,
on its own copy of a store that holds version N:

- **factory**: ``store.datasets.add`` of version N+1, which diffs it against version N in
  streamed batches (``factory/store/datasets/_delta.py``);
- **materialising peer**: the data path ``add`` used before, reproduced here: version N read
  back whole (``to_table`` with row addresses) and diffed with ``multiset_diff``;
- **floor**: only what any add needs, the new version read and canonically hashed.

The peer and the floor do not write, so the comparison flatters the peer. Medians over
``--repeat`` runs (default 3); the ratio factory / peer is printed last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._util import machine, median, print_table

_PRELUDE = """
import json, resource, sys, time
from factory.settings import Settings
from factory.store import Store
home, source = sys.argv[1], sys.argv[2]
store = Store(home, settings=Settings(home=home))
start = time.perf_counter()
"""

_EPILOGUE = """
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start}))
"""

JOBS = {
    "factory": """
v = store.datasets.add(source, name="sales", key=["id"])
assert v.version == 2, v
""",
    "materialising peer": """
import lance, pyarrow as pa
from factory.store import read_table_file
from factory.store._canonical import canonical_order, multiset_diff, normalize_table, sorted_digest
table = normalize_table(read_table_file(source))
table = table.take(canonical_order(table, ["id"]))
sorted_digest(table, ["id"])
before = store.datasets.get("sales")
stored = lance.dataset(before.uri, version=before.lance_version).to_table(with_row_address=True)
stored = normalize_table(stored.drop_columns(["_rowaddr"]))
added, removed = multiset_diff(stored, table.select(stored.column_names), ["id"])
assert len(added) == table.num_rows - stored.num_rows and len(removed) == 0
""",
    "floor (read and hash only)": """
from factory.store import read_table_file
from factory.store._canonical import canonical_order, normalize_table, sorted_digest
table = normalize_table(read_table_file(source))
sorted_digest(table.take(canonical_order(table, ["id"])), ["id"])
""",
}


def _table(rows: int, seed: int = 0):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cities = np.array([f"city-{i:03d}" for i in range(200)])
    words = np.array(["ok", "late", "refund", "gift", "promo", "bulk", "retry", "fraud?"])
    return pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "ts": pa.array(1_700_000_000_000_000 + rng.integers(0, 10**12, rows), pa.timestamp("us")),
        "amount": rng.lognormal(3, 1, rows).round(2),
        "qty": rng.integers(1, 20, rows).astype(np.int32),
        "city": pa.array(cities[rng.integers(0, len(cities), rows)]),
        "note": pa.array(np.char.add(words[rng.integers(0, len(words), rows)],
                                     rng.integers(0, 10**6, rows).astype(str))),
    })


def _measure(job: str, home: Path, source: Path) -> dict[str, float]:
    code = _PRELUDE + JOBS[job] + _EPILOGUE
    res = subprocess.run([sys.executable, "-c", code, str(home), str(source)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 M rows instead of 10 M, one run each")
    parser.add_argument("--rows", type=int, default=None, help="rows of version N (default 10 M)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (default 3)")
    args = parser.parse_args(argv)
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    repeat = args.repeat or (1 if args.quick else 3)

    import numpy as np
    import pyarrow.parquet as pq

    from factory.settings import Settings
    from factory.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-add-memory-"))
    try:
        full = _table(rows + rows // 100)
        base, source = work / "base.parquet", work / "next.parquet"
        pq.write_table(full.slice(0, rows), base)
        # Version N+1 arrives in a fresh random order, as a real export would.
        pq.write_table(full.take(np.random.default_rng(1).permutation(full.num_rows)), source)
        del full
        seed = work / "seed-home"
        Store(seed, settings=Settings(home=str(seed))).datasets.add(base, name="sales", key=["id"])
        figures: dict[str, list[dict[str, float]]] = {job: [] for job in JOBS}
        for i in range(repeat):
            for j, job in enumerate(JOBS):  # interleaved, so drift on a shared machine hits every job alike
                home = work / f"home-{i}-{j}"
                shutil.copytree(seed, home)
                figures[job].append(_measure(job, home, source))
                shutil.rmtree(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    peak = {job: median([f["peak_mib"] for f in runs]) for job, runs in figures.items()}
    secs = {job: median([f["seconds"] for f in runs]) for job, runs in figures.items()}
    print(f"version N: {rows:,} rows; version N+1: +{rows // 100:,} rows (1 %), shuffled; "
          f"median of {repeat} run(s) each, on {machine()}")
    print_table("add version N+1", ["data path", "peak RSS (MiB)", "seconds"],
                [(job, peak[job], secs[job]) for job in JOBS])
    ratio = peak["factory"] / peak["materialising peer"]
    print(f"peak RSS over the floor: factory +{peak['factory'] - peak['floor (read and hash only)']:.0f} MiB, "
          f"materialising peer +{peak['materialising peer'] - peak['floor (read and hash only)']:.0f} MiB")
    print(f"peak RSS factory / materialising peer: {ratio:.2f}x")
    return {
        "rows": rows,
        "factory_peak_mib": peak["factory"],
        "peer_peak_mib": peak["materialising peer"],
        "floor_peak_mib": peak["floor (read and hash only)"],
        "factory_seconds": secs["factory"],
        "peer_seconds": secs["materialising peer"],
        "ratio_vs_peer": ratio,
    }


if __name__ == "__main__":
    main()
