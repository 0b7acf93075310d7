"""Model serving: the factory model server against a bare Ray Serve deployment of the same model.

One run, one machine, one client: a closed-loop HTTP/1.1 load generator in its own
process (``benchmarks/_loadgen.py``) sends the same one-row JSON ``infer`` request to
- the factory model server (contract check, batching, metrics, request ids), with the
  inference log off (``sample_rate`` 0) and on (every request logged);
- a bare Ray Serve deployment of the same weights: parse, ``serve.batch``, forward,
  answer, with no contract checks, metrics or logging;
- a plain FastAPI app in one uvicorn process (no Ray, no batching), for reference.
Each replica gets the same fractional CPU. Latency is the median at one connection;
throughput is requests/s at ``--connections``. Targets are measured in turns over
``--rounds`` rounds and the medians are reported, so each sees the same machine load;
the range over rounds is printed too, since on a shared machine it is wide.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._serving import (
    FEATURES,
    MAX_BATCH,
    admitted,
    body_file,
    free_port,
    load,
    local_serve,
    own_keys,
    package,
    wait,
)
from benchmarks._util import machine, median, print_table

CPUS = 0.25


def _bare_deployment():
    """The peer: the same module behind ``serve.batch``, with no contract check, metrics or log."""
    import numpy as np
    import torch
    from ray import serve
    from starlette.responses import JSONResponse

    @serve.deployment(ray_actor_options={"num_cpus": CPUS}, max_ongoing_requests=max(16, 2 * MAX_BATCH))
    class BareModel:
        def __init__(self, home: str, digest: str):
            from factory.contract import load
            from factory.settings import Settings
            from factory.store import Store

            torch.set_num_threads(1)
            self.module = load(Store(home, settings=Settings(home=home)), digest).module

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.0)
        async def predict(self, rows: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
            sizes = [len(r) for r in rows]
            with torch.inference_mode():
                out = self.module(torch.from_numpy(np.concatenate(rows)))
            bounds = np.cumsum(sizes)[:-1]
            split = {k: np.split(v.numpy(), bounds) for k, v in out.items()}
            return [{k: parts[i] for k, parts in split.items()} for i in range(len(rows))]

        async def __call__(self, request) -> JSONResponse:
            body = await request.json()
            tensor = body["inputs"][0]
            out = await self.predict(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]))
            return JSONResponse({"model_name": "bare", "outputs": [
                {"name": k, "shape": list(v.shape), "data": v.ravel().tolist()} for k, v in out.items()]})

    return BareModel


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s instead of 5 rounds of 6 s")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per target and round")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections for throughput")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 6.0)

    from ray import serve

    from factory.serve import deploy
    from factory.settings import Settings
    from factory.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    own_keys(work)
    peer = None
    try:
        with local_serve() as base:
            home = str(work / "home")
            store = Store(home, settings=Settings(home=home))
            quiet = package(store, "bench", cpus=CPUS, sample_rate=0.0)
            logged = package(store, "bench-logged", cpus=CPUS, sample_rate=1.0)
            body = body_file(work)
            targets = {
                "factory": deploy(store, admitted(store, quiet.digest), "dev").url + "/infer",
                "factory, log on": deploy(store, admitted(store, logged.digest), "dev").url + "/infer",
            }
            serve.run(_bare_deployment().bind(home, quiet.digest), name="bare", route_prefix="/bare")
            targets["bare Ray Serve"] = f"{base}/bare"
            peer_port = free_port()
            peer = subprocess.Popen([sys.executable, "-m", "benchmarks._fastapi_peer", "--home", home,
                                     "--digest", quiet.digest, "--port", str(peer_port)])
            targets["FastAPI/uvicorn"] = f"http://127.0.0.1:{peer_port}/v2/models/bench/infer"
            for url in targets.values():
                wait(url, body.read_bytes())

            latency: dict[str, list[dict]] = {name: [] for name in targets}
            runs: dict[str, list[dict]] = {name: [] for name in targets}
            names = list(targets)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    latency[name].append(load(targets[name], body, 1, seconds))
                    runs[name].append(load(targets[name], body, args.connections, seconds))
    finally:
        if peer is not None:
            peer.terminate()
            peer.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    def med(runs: list[dict], key: str) -> float:
        return median([run[key] for run in runs])

    p50 = {n: med(latency[n], "p50_ms") for n in targets}
    rps = {n: med(runs[n], "rps") for n in targets}
    p99 = {n: med(runs[n], "p99_ms") for n in targets}
    errors = {n: sum(run["errors"] for run in latency[n] + runs[n]) for n in targets}
    print(f"one-row JSON infer of an MLP ({FEATURES} features, hidden 64x64), {CPUS} CPU per replica, "
          f"{rounds} rounds of {seconds:.0f} s, on {machine()}")
    spread = {n: f"{min(r['rps'] for r in runs[n]):.0f}-{max(r['rps'] for r in runs[n]):.0f}" for n in targets}
    print_table("model servers (medians over rounds)",
                ["server", "p50 ms (1 connection)", f"req/s ({args.connections} connections)", "req/s, all rounds",
                 f"p99 ms ({args.connections} connections)", "errors"],
                [(n, p50[n], rps[n], spread[n], p99[n], errors[n]) for n in targets])
    figures = {
        "p50_ratio_factory_vs_bare": p50["factory"] / p50["bare Ray Serve"],
        "throughput_ratio_factory_vs_bare": rps["factory"] / rps["bare Ray Serve"],
        "throughput_ratio_log_on_vs_off": rps["factory, log on"] / rps["factory"],
        "throughput_ratio_factory_vs_fastapi": rps["factory"] / rps["FastAPI/uvicorn"],
    }
    print(f"factory vs FastAPI/uvicorn (reference): p50 {p50['factory'] / p50['FastAPI/uvicorn']:.2f}x, "
          f"throughput {figures['throughput_ratio_factory_vs_fastapi']:.2f}x")
    print(f"inference log on vs off, throughput: {figures['throughput_ratio_log_on_vs_off']:.2f}x (goal >= 0.95x)")
    print(f"factory vs bare Ray Serve: p50 {figures['p50_ratio_factory_vs_bare']:.2f}x (goal <= 1.1x), "
          f"throughput {figures['throughput_ratio_factory_vs_bare']:.2f}x (goal >= 0.9x)")
    return {**{f"p50_ms[{n}]": v for n, v in p50.items()}, **{f"rps[{n}]": v for n, v in rps.items()}, **figures}


if __name__ == "__main__":
    main()
