"""Loading a 2 GiB sharded model package against plain ``safetensors.torch.load_file`` of its shards.

The package is an MLP with 2 GiB of float32 weights, packed as Hugging Face shards
of at most 512 MiB. ``factory.contract.load`` reads the manifest, checks the
contract, the architecture and every header, builds the module without memory for
its tensors and reads each shard straight into them, verifying every shard's
SHA-256. The peer loads the same shard files (the store's blobs) with
``safetensors.torch.load_file`` into one state dict, verifying nothing, three ways:
with ``backend="pread"``, which reads every byte into memory as we do (the ratio's
basis); with its default ``mmap`` backend, which since safetensors 0.8 maps the files
and reads nothing until a tensor is touched (so its load time measures no reading);
and ``mmap`` followed by touching every tensor once, as a first use does. Each load
runs in a fresh process, the shards page-cached for all; peak RSS is the process's
high-water mark (``VmHWM``) less its resident size before loading (mapped file pages
count as resident once touched).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._util import machine, median, side_by_side

_PACK = """
import sys, torch
from factory.contract import Contract, default_registry, package
from factory.settings import Settings
from factory.store import Store

home, width, layers, shard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
config = {"in_features": width, "out_features": 2, "hidden": [width] * layers}
arch = default_registry().get("mlp-classifier")
with torch.device("meta"):
    model = arch.build(config)
model = model.to_empty(device="cpu")
with torch.no_grad():
    for i, p in enumerate(model.parameters()):  # cheap, distinct content; no random init needed
        p.fill_(1.0 / (i + 1))
sig = arch.expected(config)
store = Store(home, settings=Settings(home=home))
pkg = package(store, model, Contract(name="wide", inputs=sig.inputs, outputs=sig.outputs), max_shard_bytes=shard)
files = store.artifacts.get(pkg.digest).metadata["files"]
print(pkg.digest)
for name, digest in sorted(files.items()):
    if name.startswith("model-"):
        print(store.blobs.path(digest))
"""

_LOAD = """
import re, sys, time
import torch

def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) << 10

how, home, digest, shards = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if how == "factory":
    from factory.contract import load
    from factory.settings import Settings
    from factory.store import Store
    store = Store(home, settings=Settings(home=home))
    store.artifacts  # imports outside the timing, as for the peer
    load  # noqa
else:
    from safetensors.torch import load_file
    backend = "pread" if how == "pread" else "mmap"
before = status("VmRSS")
start = time.perf_counter()
if how == "factory":
    state = load(store, digest).module.state_dict()
else:
    state = {}
    for path in shards:
        state.update(load_file(path, backend=backend))
    if how == "touch":
        for t in state.values():
            t.view(-1)[:: max(1, 4096 // t.element_size())].sum()  # one read per page
wall = time.perf_counter() - start
print(wall, status("VmHWM") - before, sum(t.numel() * t.element_size() for t in state.values()))
"""


def _run(script: str, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return res.stdout.split()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="256 MiB of weights in 64 MiB shards, 3 runs")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    # float32 MLP of width w and n hidden layers: about n * w * w * 4 bytes of weights.
    width, layers, shard = (4096, 4, 64 << 20) if args.quick else (8192, 8, 512 << 20)
    repeat = args.repeat or (3 if args.quick else 5)

    work = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    try:
        home = str(work / "home")
        digest, *shards = _run(_PACK, home, str(width), str(layers), str(shard))
        subprocess.run(["cat", *shards], stdout=subprocess.DEVNULL, check=True)  # page-cache the shards for both
        names = {"factory": "factory.contract.load (verified)", "pread": "load_file, pread (unverified)",
                 "mmap": "load_file, mmap (reads nothing)", "touch": "load_file, mmap + first touch"}
        results: dict[str, list[float]] = {name: [] for name in names.values()}
        peaks: dict[str, list[float]] = {name: [] for name in names.values()}
        weights = 0
        for _ in range(repeat):  # interleaved, so drift in the machine hits both alike
            for how, name in names.items():
                wall, peak, weights = _run(_LOAD, how, home, digest, *shards)
                results[name].append(float(wall))
                peaks[name].append(int(peak) / int(weights))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    weights = int(weights)
    print(f"{weights / 2**30:.2f} GiB of weights in {len(shards)} shards, median of {repeat} runs, on {machine()}")
    medians = side_by_side(results, names["pread"], "load wall time (s)", short="pread")
    for name in names.values():
        print(f"{name}: peak RSS {median(peaks[name]):.2f}x the weights")
    ours, theirs = medians[names["factory"]], medians[names["pread"]]
    print(f"factory.contract.load / safetensors load_file (pread): {ours / theirs:.2f}x (goal <= 1.2x); "
          f"peak RSS {median(peaks[names['factory']]):.2f}x the weights (goal < 1.5x)")
    return {"weights_gib": weights / 2**30, "shards": len(shards),
            **{f"median_s[{k}]": v for k, v in medians.items()},
            **{f"peak_rss_x_weights[{k}]": median(v) for k, v in peaks.items()},
            "ratio_vs_load_file_pread": ours / theirs}


if __name__ == "__main__":
    main()
