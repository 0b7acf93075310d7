"""`make bench`: run every benchmark in one go (each prints its ratio last).

`python -m benchmarks [--quick] [NAME ...]` runs the named ones (each
``benchmarks/bench_<name>.py``), or all of them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

# Every benchmarks/bench_<name>.py, in name order: adding a file adds a benchmark.
BENCHES = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which benchmarks (default: all of {', '.join(BENCHES)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", default="bench-out/results.json", help="where to write all figures as JSON")
    args = parser.parse_args()
    results = {}
    for name in args.names or BENCHES:
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        results[name] = module.main(["--quick"] if args.quick else [])
        print(f"({name} took {time.perf_counter() - start:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nfigures written to {out}")


if __name__ == "__main__":
    main()
