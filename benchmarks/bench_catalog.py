"""The catalog under concurrent writers: SQLite against PostgreSQL, side by side.

Two workloads, each with 1, 4 and 16 writer processes on one store:

- ref CAS moves: every writer moves the same ref (``store.refs.set(..., expected=...)``),
  re-reading and retrying when another writer moved it first; only successful moves count;
- artifact adds: every writer records distinct metadata artifacts (``store.artifacts.add``:
  the record blob, then the catalog row, its edges and its field index).

The embedded SQLite catalog is a file in the home (WAL, one writer at a time, synced at
each commit); PostgreSQL is a throwaway local server (``tests/_postgres.py``) with its
default durability (WAL flushed at each commit), on the same disk. Writers start, open the
store and wait at a barrier; the time is from the barrier to the last writer's last write.
Each figure is the median of the repeats; the ratio (PostgreSQL over SQLite) comes last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import machine, median, print_table

WRITERS = (1, 4, 16)
WORKLOADS = {"ref CAS moves": "cas", "artifact adds": "adds"}  # name -> key in the returned figures

# One writer: opens the store, prepares its targets, says "ready", waits for the go file,
# then does its operations and prints when it started and ended (wall clock).
_WRITER = """
import json, os, sys, time
from factory.errors import RefConflictError
from factory.settings import Settings
from factory.store import Store
home, catalog, workload, writer, ops, go = sys.argv[1:7]
writer, ops = int(writer), int(ops)
store = Store(settings=Settings(home=home, catalog=catalog, actor=f"writer-{writer}"))
targets = [store.artifacts.add("model", metadata={"writer": writer, "i": i}).digest for i in range(ops)]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
start = time.time()
retries = 0
if workload == "ref CAS moves":
    for target in targets:
        while True:
            current = store.refs.get("model/bench/dev")
            try:
                store.refs.set("model/bench/dev", target, expected=current)
                break
            except RefConflictError:
                retries += 1
else:
    for i in range(ops):
        store.artifacts.add("evaluation", metadata={"writer": writer, "i": i, "auc": 0.5 + i / (2 * ops)})
print(json.dumps({"start": start, "end": time.time(), "retries": retries}), flush=True)
"""


def _run(home: str, catalog: str, workload: str, writers: int, ops: int, work: Path) -> tuple[float, int]:
    """Operations per second of ``writers`` processes doing ``ops`` each, and how often CAS lost."""
    go = work / f"go-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, home, catalog, workload, str(w), str(ops), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for w in range(writers)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a writer failed to start: {p.stderr.read()[-2000:]}")
        go.touch()
        results = []
        for p in procs:
            line = p.stdout.readline()
            if p.wait(timeout=1800) != 0 or not line:
                raise RuntimeError(f"a writer failed: {p.stderr.read()[-2000:]}")
            results.append(json.loads(line))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return writers * ops / elapsed, sum(r["retries"] for r in results)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 10 operations per writer")
    parser.add_argument("--ops", type=int, default=None, help="operations per writer (default 40, --quick 10)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (default 3, --quick 1)")
    args = parser.parse_args(argv)
    ops = args.ops or (10 if args.quick else 40)
    repeat = args.repeat or (1 if args.quick else 3)

    from factory.settings import Settings
    from factory.store import Store
    from tests._postgres import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    server = PostgresServer.start(durable=True)
    rates: dict[tuple[str, int, str], list[float]] = {}
    retries: dict[tuple[str, int, str], int] = {}
    try:
        for _ in range(repeat):
            for workload in WORKLOADS:
                for writers in WRITERS:
                    for backend in ("sqlite", "postgresql"):
                        home = str(work / f"home-{time.monotonic_ns()}")
                        catalog = server.create_database() if backend == "postgresql" else f"{home}/catalog.db"
                        Store(settings=Settings(home=home, catalog=catalog)).init()
                        rate, lost = _run(home, catalog, workload, writers, ops, work)
                        rates.setdefault((workload, writers, backend), []).append(rate)
                        retries[(workload, writers, backend)] = retries.get((workload, writers, backend), 0) + lost
                        if backend == "postgresql":
                            server.drop_database(catalog)
                        shutil.rmtree(home, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{ops} operations per writer, median of {repeat}, on {machine()}")
    rows, out = [], {}
    for workload in WORKLOADS:
        for writers in WRITERS:
            sqlite = median(rates[(workload, writers, "sqlite")])
            postgres = median(rates[(workload, writers, "postgresql")])
            key = f"{WORKLOADS[workload]}_{writers}"
            out[f"{key}_sqlite_per_s"], out[f"{key}_postgresql_per_s"] = sqlite, postgres
            out[f"{key}_postgresql_over_sqlite"] = postgres / sqlite
            rows.append((workload, writers, sqlite, postgres, retries[(workload, writers, "sqlite")],
                         retries[(workload, writers, "postgresql")], postgres / sqlite))
    print_table("catalog writes per second (all writers together)",
                ["workload", "writers", "SQLite /s", "PostgreSQL /s", "CAS lost (SQLite)", "CAS lost (PostgreSQL)",
                 "PostgreSQL / SQLite"], rows)
    for workload, writers, *_, ratio in rows:
        print(f"{workload}, {writers} writers: PostgreSQL / SQLite = {ratio:.2f}x")
    return out


if __name__ == "__main__":
    main()
