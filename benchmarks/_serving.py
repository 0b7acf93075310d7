"""Shared makings for the serving benchmarks: a local Ray Serve, small packages, the load generator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

FEATURES = 16
MAX_BATCH = 32
# The faulty test architecture (tests/_plugins): the MLP sleeping or failing inside Serve replicas.
PLUGINS = Path(__file__).resolve().parents[1] / "tests" / "_plugins"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def use_plugins() -> None:
    """Put tests/_plugins on this process's path and every Ray worker's (for the ``faulty-classifier``)."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(PLUGINS) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(PLUGINS)])


def package(store, name: str, *, cpus: float, sample_rate: float = 0.0, seed: int = 0,
            architecture: str = "mlp-classifier", **extra: float):
    """An MLP classifier (FEATURES in, 4 classes, hidden 64x64) packaged as model ``name``; ``extra`` goes to the
    architecture's config (``sleep_ms``/``fail_rate`` for ``faulty-classifier``)."""
    from factory.contract import Contract, Observability, Resources, default_registry, package

    registry = default_registry()
    if architecture not in registry:
        registry.load_entry_points()
    config = {"in_features": FEATURES, "out_features": 4, "hidden": [64, 64], **extra}
    signature = registry.get(architecture).expected(config)
    contract = Contract(name=name, inputs=signature.inputs, outputs=signature.outputs,
                        resources=Resources(cpus=cpus, memory_mb=256, max_batch_size=MAX_BATCH,
                                            p99_latency_ms=10_000.0),
                        observability=Observability(sample_rate=sample_rate))
    return package(store, registry.build(architecture, config, seed=seed).eval(), contract)


def own_keys(folder: Path) -> None:
    """Sign and trust attestations with keys of this run only (set before Ray starts: replicas check them too)."""
    os.environ["FACTORY_KEYS"] = str(folder / "keys")


def admitted(store, digest: str, env: str = "dev") -> str:
    """Gate ``digest`` for ``env`` so that deploy admits it; the digest."""
    from factory.gates import admit, run_gate

    run_gate(store, digest, env, parallel=False)
    admit(store, digest, env).require()
    return digest


def body_file(folder: Path) -> Path:
    """The one-row JSON infer request every target gets."""
    path = folder / "body.json"
    path.write_text(json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, FEATURES], "data":
                                            np.random.default_rng(0).standard_normal(FEATURES).round(4).tolist()}]}))
    return path


def load(url: str, body: Path, connections: int, seconds: float, *, rate: float = 0.0) -> dict[str, float]:
    """One run of the load generator in its own process: requests, errors, rps, p50_ms, p99_ms."""
    out = subprocess.run([sys.executable, "-m", "benchmarks._loadgen", url, "--body", str(body), "-c",
                          str(connections), "-d", str(seconds), "--warmup", "1", "--rate", str(rate)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def wait(url: str, body: bytes, timeout: float = 120.0) -> None:
    """Until ``url`` answers the body with a 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10).status_code \
                    == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} never answered 200")


@contextmanager
def local_serve() -> Iterator[str]:
    """A local 2-CPU Ray cluster with Serve on a free loopback port, as factory runs it; its base URL."""
    import ray
    from ray import serve

    from factory.serve import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # as factory runs Serve: proxies retry lost replicas
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
