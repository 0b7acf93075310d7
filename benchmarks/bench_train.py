"""Ray Train through ``factory.train`` against a plain single-process torch loop, same samples and epochs.

CPU (default): ``train()`` with 2 DDP workers of 1 CPU each (the whole factory path:
submission checks, code and environment capture, checkpoints every epoch, packaging)
against one process running the same MLP on the same rows with the same global batch,
optimiser and epochs, with 1 thread or one per core, whichever is faster on the machine.
Sized so the plain loop takes at least 60 s: the epochs are chosen from a timed slice
(``--quick``: a smoke run of a few seconds).
Reports wall times (goal: factory <= 1.25x plain), the fixed start-up (everything before
the first epoch's report, less one epoch) apart from the median time per epoch, and the
start-up split into the driver's part (the checks at submission, the code and environment
capture, measured on their own) and the rest (the run record, Ray Train's controller and
workers, the workers' data load).

``--gpu``: on one GPU, plain torch against Ray Train DDP and DeepSpeed ZeRO-2 with one
worker each, as samples/s over the epochs after the first (goal >= 0.9x). It needs a
CUDA build of torch and a GPU, and says so and stops when there is none.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._util import machine, median, print_table

FEATURES = 32
HIDDEN = [256, 256]
PLAIN_MIN_S = 60.0


def _rows(args: argparse.Namespace) -> tuple[int, int, int]:
    """(rows, epochs, batch) for the mode."""
    if args.gpu:
        return (200_000 if args.quick else 2_000_000), (3 if args.quick else 5), 4096
    return (20_000 if args.quick else 300_000), (2 if args.quick else 5), 512


def _config(dataset: str, *, epochs: int, batch: int, workers: int, cpus: float, tier: str = "cpu",
            strategy: Any = "ddp", hidden: list[int] = HIDDEN) -> Any:
    from factory.train._synthetic import mlp_config

    return mlp_config(
        dataset, features=FEATURES, name="bench-mlp", epochs=epochs, seed=0, max_failures=0, strategy=strategy,
        architecture_config={"in_features": FEATURES, "out_features": 2, "hidden": hidden},
        hyperparameters={"lr": 1e-3, "batch_size": batch, "validation_fraction": 0.0},
        compute={"tier": tier, "workers": workers, "cpus_per_worker": cpus},
    )


def plain_torch(x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, hidden: list[int], device: str,
                threads: int | None = None) -> dict[str, Any]:
    """The peer: one process, the same model, batches, optimiser and epochs; times per epoch."""
    import torch

    from factory.contract import default_registry
    from factory.train._data import epoch_order

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    model = default_registry().build("mlp-classifier", {"in_features": x.shape[1], "out_features": 2,
                                                        "hidden": hidden}, seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    train = np.arange(len(y))
    setup = time.perf_counter() - started
    epoch_times = []
    for epoch in range(epochs):
        begin = time.perf_counter()
        order = epoch_order(train, epoch, 0)
        for step in range(len(train) // batch):
            index = order[step * batch:(step + 1) * batch]
            xb = torch.from_numpy(x[index]).to(device)
            yb = torch.from_numpy(y[index]).to(device)
            out = model(xb)
            loss = torch.nn.functional.nll_loss(out["probabilities"].clamp_min(1e-12).log(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        epoch_times.append(time.perf_counter() - begin)
    return {"wall": time.perf_counter() - started, "startup": setup, "epochs": epoch_times}


def factory_train(store: Any, config: Any, storage: str) -> dict[str, Any]:
    """``factory.train.train`` with report arrival times, so start-up and epochs can be told apart."""
    from factory.train import train

    arrivals: list[float] = []
    started = time.perf_counter()
    result = train(config, store=store, force=True, storage_path=storage,
                   progress=lambda r: arrivals.append(time.perf_counter()) if r.end_of_epoch else None)
    wall = time.perf_counter() - started
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    per_epoch = median(gaps) if gaps else arrivals[0] - started
    return {"wall": wall, "startup": arrivals[0] - started - per_epoch, "epoch": per_epoch, "gaps": gaps,
            "result": result}


def driver_prep(store: Any, config: Any) -> float:
    """Seconds of what ``train`` does on the driver before Ray Train starts, timed on their own."""
    from factory.train.provenance import capture_code, capture_environment
    from factory.train.submission import check_submission

    started = time.perf_counter()
    check_submission(config, store)
    capture_code()
    capture_environment()
    return time.perf_counter() - started


def _fastest_threads(x: np.ndarray, y: np.ndarray, batch: int, cores: int) -> tuple[int, float]:
    """The peer's thread count, 1 or ``cores``, whichever trains a slice faster here, and its seconds per step.

    On a busy VM, torch's spinning OpenMP threads can make two threads many times slower
    than one; the peer gets whichever is its best.
    """
    steps = 20
    n = min(len(y), steps * batch)
    times = {t: median(plain_torch(x[:n], y[:n], epochs=2, batch=batch, hidden=HIDDEN, device="cpu",
                                   threads=t)["epochs"]) for t in sorted({1, cores})}
    best = min(times, key=times.get)
    return best, times[best] / (n // batch)


def _epochs_for(minimum_s: float, step_s: float, rows: int, batch: int, epochs: int) -> int:
    """Enough epochs (at least ``epochs``) for the plain loop to take ``minimum_s`` at ``step_s`` a step."""
    per_epoch = step_s * (rows // batch)
    return max(epochs, math.ceil(minimum_s / per_epoch)) if per_epoch > 0 else epochs


def _cpu(args: argparse.Namespace, store: Any, work: Path) -> dict[str, Any]:
    import ray

    from factory.train._synthetic import classification_table
    from factory.train._data import DataSpec, load_rows

    rows, epochs, batch = _rows(args)
    version = store.datasets.add(classification_table(rows, features=FEATURES, seed=1), name="bench", key=["id"])
    data = load_rows(DataSpec(version.uri, version.lance_version, ("id",), tuple(f"f{i:02d}" for i in range(FEATURES)),
                              "label", "classification"))
    cores = args.cores
    threads, step_s = _fastest_threads(data.x, data.y, batch, cores)
    if not args.quick:
        # The issue asks for at least 60 s of plain torch; a tenth more covers the estimate's error.
        epochs = _epochs_for(PLAIN_MIN_S * 1.1, step_s, rows, batch, epochs)
    plain = plain_torch(data.x, data.y, epochs=epochs, batch=batch, hidden=HIDDEN, device="cpu", threads=threads)
    if not args.quick and plain["wall"] < PLAIN_MIN_S:
        print(f"note: plain torch took {plain['wall']:.0f} s, under the {PLAIN_MIN_S:.0f} s this benchmark asks for "
              "(the machine was faster than its estimate)")
    ray_started = time.perf_counter()
    # "local": a Ray of the benchmark's own, never another one running on the machine.
    ray.init(address="local", num_cpus=cores, object_store_memory=256 * 2**20, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    ray_init = time.perf_counter() - ray_started
    config = _config(version.digest, epochs=epochs, batch=batch, workers=2, cpus=cores / 2)
    try:
        ours = factory_train(store, config, str(work / "ray"))
    finally:
        ray.shutdown()
    prep = driver_prep(store, config)
    ratio = ours["wall"] / plain["wall"]
    print(f"{rows:,} rows x {FEATURES} features, MLP {HIDDEN}, batch {batch}, {epochs} epochs, on {machine()}")
    print_table(
        "wall time (s)",
        ["run", "total", "fixed start-up", "per epoch (median)"],
        [
            (f"plain torch, 1 process, {threads} thread(s)", plain["wall"], plain["startup"], median(plain["epochs"])),
            ("factory train, Ray Train DDP 2 workers", ours["wall"], ours["startup"], ours["epoch"]),
            ("  of which: driver checks and capture", prep, prep, 0.0),
            ("  of which: run record, Ray Train start, data load", ours["startup"] - prep, ours["startup"] - prep, 0.0),
            ("(ray.init, not counted)", ray_init, ray_init, 0.0),
        ],
    )
    print(f"factory / plain torch wall time: {ratio:.2f}x (goal <= 1.25x)")
    return {"rows": rows, "epochs": epochs, "plain_threads": threads, "plain_wall_s": plain["wall"],
            "plain_epoch_s": median(plain["epochs"]), "factory_wall_s": ours["wall"],
            "factory_startup_s": ours["startup"], "factory_driver_prep_s": prep, "factory_epoch_s": ours["epoch"],
            "ray_init_s": ray_init, "ratio": ratio}


def _gpu(args: argparse.Namespace, store: Any, work: Path) -> dict[str, Any]:
    import ray

    from factory.train._synthetic import classification_table
    from factory.train._data import DataSpec, load_rows

    rows, epochs, batch = _rows(args)
    hidden = [2048, 2048]
    version = store.datasets.add(classification_table(rows, features=FEATURES, seed=1), name="bench", key=["id"])
    data = load_rows(DataSpec(version.uri, version.lance_version, ("id",), tuple(f"f{i:02d}" for i in range(FEATURES)),
                              "label", "classification"))
    plain = plain_torch(data.x, data.y, epochs=epochs, batch=batch, hidden=hidden, device="cuda")
    samples = (rows // batch) * batch
    rates = {"plain torch": samples / median(plain["epochs"][1:])}
    ray.init(address="local", num_gpus=1, object_store_memory=1 << 30, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        for label, strategy in (("Ray Train DDP", "ddp"), ("DeepSpeed ZeRO-2", {"kind": "deepspeed", "zero_stage": 2})):
            config = _config(version.digest, epochs=epochs, batch=batch, workers=1, cpus=2, tier="gpu",
                             strategy=strategy, hidden=hidden)
            run = factory_train(store, config, str(work / "ray"))
            rates[label] = samples / (median(run["gaps"]) if run["gaps"] else run["epoch"])
    finally:
        ray.shutdown()
    import torch

    print(f"{rows:,} rows x {FEATURES} features, MLP {hidden}, batch {batch}, {epochs} epochs, "
          f"on {torch.cuda.get_device_name(0)} ({machine()})")
    base = rates["plain torch"]
    print_table("samples/s (epochs after the first)", ["run", "samples/s", "x plain"],
                [(k, v, v / base) for k, v in rates.items()])
    worst = min(v / base for k, v in rates.items() if k != "plain torch")
    print(f"slowest factory path / plain torch samples/s: {worst:.2f}x (goal >= 0.9x)")
    return {"rows": rows, "samples_per_s": rates, "ratio": worst}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds of plain torch")
    parser.add_argument("--gpu", action="store_true", help="DDP and DeepSpeed on one GPU against plain torch")
    parser.add_argument("--cores", type=int, default=2, help="CPUs for each side in CPU mode")
    args = parser.parse_args(argv)
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("--gpu needs a GPU and a CUDA build of torch; torch.cuda.is_available() is False here "
                  f"(torch {torch.__version__}). Nothing was run.")
            return {"skipped": "no GPU"}

    from factory.settings import Settings
    from factory.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        store = Store(work / "home", settings=Settings(home=str(work / "home")))
        return (_gpu if args.gpu else _cpu)(args, store, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import sys

    result = main(sys.argv[1:])
    sys.exit(2 if result.get("skipped") else 0)
