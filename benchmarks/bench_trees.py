"""`store.trees.put` of a 1 GiB folder of 64 files against the single-stream hashing limit.

The limit is ``openssl dgst -sha256`` over the same files one after another (one
process, page-cached files, like ours): a tree put hashes files on every core at
once, so it should beat hashing them in one stream although it also writes them.
``dvc add`` of the same folder (into a fresh DVC repo, untimed set-up) is the peer.
Each tree put runs in a fresh process on a fresh store; the figure is the call
itself, and the CPU seconds it used over its wall time say how many cores worked.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import fresh_dvc_repo, machine, median, side_by_side, time_process

_PUT = """
import resource, sys, time
from factory.settings import Settings
from factory.store import Store

home, src = sys.argv[1], sys.argv[2]
store = Store(home, settings=Settings(home=home))
store.trees, store.artifacts  # imports and set-up outside the timing

def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime

c0, t0 = cpu(), time.perf_counter()
store.trees.put(src)
print(time.perf_counter() - t0, cpu() - c0)
"""


def _make_folder(root: Path, files: int, size: int) -> list[Path]:
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    paths = []
    for i in range(files):
        path = root / f"shard-{i:03d}.bin"
        with open(path, "wb") as f:
            for j in range(size >> 20):  # every MiB differs, so nothing can be deduplicated
                f.write(i.to_bytes(4, "little") + j.to_bytes(4, "little") + block[8:])
        paths.append(path)
    return paths


def _tree_put(home: Path, src: Path) -> tuple[float, float]:
    shutil.rmtree(home, ignore_errors=True)
    os.sync()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", _PUT, str(home), str(src)], check=True, capture_output=True,
                         text=True, env=env).stdout.split()
    return float(out[0]), float(out[1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256 MiB in 16 files, 3 runs")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    files, size = (16, 16 << 20) if args.quick else (64, 16 << 20)
    repeat = args.repeat or (3 if args.quick else 7)
    dvc = Path(sys.executable).with_name("dvc")

    work = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    try:
        src = work / "folder"
        paths = _make_folder(src, files, size)
        subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        home, repo = work / "home", work / "dvc"

        def reset_dvc():
            fresh_dvc_repo(repo, dvc, fill=lambda r: shutil.copytree(src, r / "folder"))

        results: dict[str, list[float]] = {"openssl dgst -sha256 (one stream)": [], "store.trees.put": []}
        if dvc.exists():
            results["dvc add"] = []
        cores_used = []
        for _ in range(repeat):  # interleaved, so drift in the machine hits every tool alike
            results["openssl dgst -sha256 (one stream)"].append(
                time_process(["openssl", "dgst", "-sha256", *map(str, paths)]))
            wall, cpu = _tree_put(home, src)
            results["store.trees.put"].append(wall)
            cores_used.append(cpu / wall)
            if dvc.exists():
                results["dvc add"].append(time_process(f"cd {repo} && {dvc} add -q folder", shell=True,
                                                       before=reset_dvc))
            time.sleep(0.5)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total = files * size
    print(f"tree of {files} files, {total >> 20} MiB, median of {repeat} runs, on {machine()}")
    medians = side_by_side(results, "openssl dgst -sha256 (one stream)", "wall time (s)")
    limit = medians["openssl dgst -sha256 (one stream)"]
    ours = medians["store.trees.put"]
    print(f"store.trees.put: {total / ours / 2**30:.2f} GiB/s, {median(cores_used):.2f} cores busy (CPU s / wall s)")
    if "dvc add" in medians:
        print(f"store.trees.put / dvc add: {ours / medians['dvc add']:.2f}x")
    print(f"store.trees.put / openssl dgst -sha256 over the files one after another: {ours / limit:.2f}x "
          "(goal <= 0.75x)")
    return {"files": files, "size_mib": total >> 20, "cores_busy": median(cores_used),
            **{f"median_s[{k}]": v for k, v in medians.items()}, "ratio_vs_openssl": ours / limit}


if __name__ == "__main__":
    main()
