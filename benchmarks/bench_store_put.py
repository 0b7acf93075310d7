"""`factory store put` of a large file, as a whole process, against the hashing limit.

Peers, each timed as a whole process on the same file (page-cached, like ours):
``openssl dgst -sha256`` (the limit: hashing alone), ``sha256sum FILE && cp FILE DEST``
(hash then copy, the naive way) and ``dvc add`` (where DVC is installed). Each run of
``factory store put`` writes into a fresh store, so it pays for the full copy. The
same command without its head start (the console script's early staging, see
``factory/runtime/_prefetch.py``) runs beside it, to show what the head start buys.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._util import fresh_dvc_repo, machine, side_by_side, time_process

# The console script exactly, less its head start.
_NO_HEAD_START = (
    "import sys; from factory.runtime import _entry, _prefetch; "
    "_prefetch.start = lambda argv: None; _entry.main(sys.argv[1:])"
)


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            # Vary each MiB so nothing downstream can deduplicate blocks.
            f.write(i.to_bytes(8, "little") + block[8:])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256 MiB instead of 1 GiB, 3 runs")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    size = (256 if args.quick else 1024) << 20
    # Whole-process times on a shared VM swing by 0.2 s from run to run; 9 runs keep the median steady.
    repeat = args.repeat or (3 if args.quick else 9)
    factory_bin = str(Path(sys.executable).with_name("factory"))

    work = Path(tempfile.mkdtemp(prefix="bench-put-"))
    try:
        src = work / "big.bin"
        _make_file(src, size)
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        def fresh(*paths: Path):
            def reset():
                for p in paths:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            return reset

        home, dest = work / "home", work / "copy.bin"
        put = ["store", "put", str(src), "--home", str(home)]
        results: dict[str, list[float]] = {"openssl dgst -sha256": [], "factory store put": [],
                                           "factory store put, no head start": [], "sha256sum && cp": []}
        dvc = Path(sys.executable).with_name("dvc")
        if dvc.exists():
            results["dvc add"] = []
        for _ in range(repeat):  # interleaved, so drift in the machine hits every tool alike
            results["openssl dgst -sha256"].append(time_process(["openssl", "dgst", "-sha256", str(src)]))
            results["factory store put"].append(
                time_process([factory_bin, *put], before=fresh(home), env={"CI": "1"}))
            results["factory store put, no head start"].append(
                time_process([sys.executable, "-c", _NO_HEAD_START, *put], before=fresh(home), env={"CI": "1"}))
            results["sha256sum && cp"].append(
                time_process(f"sha256sum {src} > /dev/null && cp {src} {dest}", shell=True, before=fresh(dest)))
            if dvc.exists():
                results["dvc add"].append(time_process(
                    f"cd {work / 'dvc'} && {dvc} add -q big.bin", shell=True,
                    before=lambda: fresh_dvc_repo(work / "dvc", dvc, fill=lambda r: shutil.copyfile(src, r / "big.bin"))))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"store put of {size >> 20} MiB, median of {repeat} runs, on {machine()}")
    medians = side_by_side(results, "openssl dgst -sha256", "whole-process wall time (s)")
    limit = medians["openssl dgst -sha256"]
    ours = medians["factory store put"]
    print(f"factory store put / sha256sum && cp: {ours / medians['sha256sum && cp']:.2f}x")
    print(f"the head start saves {medians['factory store put, no head start'] - ours:.2f} s")
    if "dvc add" in medians:
        print(f"factory store put / dvc add: {ours / medians['dvc add']:.2f}x")
    print(f"factory store put / openssl dgst -sha256: {ours / limit:.2f}x (goal <= 1.25x)")
    return {"size_mib": size >> 20, **{f"median_s[{k}]": v for k, v in medians.items()}, "ratio_vs_openssl": ours / limit}


if __name__ == "__main__":
    main()
