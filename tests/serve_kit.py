"""Shared makings for the serving tests."""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import numpy as np


def gate(store, digest: str, env: str) -> None:
    """Run ``env``'s built-in gate set on a package (in this process) so that ``env`` admits it; fail if not."""
    from factory.gates import admit, run_gate

    run_gate(store, digest, env, parallel=False)
    decision = admit(store, digest, env)
    assert decision.allowed, decision.explain()


def package_mlp(store, *, seed: int = 0, name: str = "iris", cpus: float = 0.1, max_batch_size: int = 8,
                sample_rate: float = 1.0, admit_to: str | None = "dev", **resources):
    """The built-in MLP classifier (4 features, 3 classes) packaged into ``store`` and gated for ``admit_to``:
    what the ``mlp_package`` fixture makes, for a store that fixture does not reach (a module's own)."""
    from factory.contract import Contract, Observability, Resources, default_registry, package

    config = {"in_features": 4, "out_features": 3, "hidden": [8]}
    signature = default_registry().get("mlp-classifier").expected(config)
    contract = Contract(name=name, inputs=signature.inputs, outputs=signature.outputs,
                        resources=Resources(cpus=cpus, memory_mb=256, max_batch_size=max_batch_size, **resources),
                        observability=Observability(sample_rate=sample_rate))
    pkg = package(store, default_registry().build("mlp-classifier", config, seed=seed).eval(), contract)
    if admit_to is not None:
        gate(store, pkg.digest, admit_to)
    return pkg


def admit_as_dev(store, env: str, *digests: str) -> None:
    """Make ``env`` require what dev does (contract and security), then gate ``digests`` so that ``env`` admits them.

    For tests about rollouts in prod whose packages have no datasets for the quality,
    fairness and drift gates.
    """
    from factory.gates import admit, set_environment
    from factory.gates.admission import DEFAULT_ENVIRONMENTS

    policy = DEFAULT_ENVIRONMENTS["dev"].model_copy(update={"name": env})
    set_environment(store, policy, reason=f"tests: {env} requires what dev does")
    for digest in digests:
        gate(store, digest, "dev")
        decision = admit(store, digest, env)
        assert decision.allowed, decision.explain()


class Load:
    """Client threads posting infer requests until stopped; every answer kept as (sent at, status, version).

    Each request is one row, taken in turn from 16 fixed random rows.
    """

    def __init__(self, url: str, threads: int = 2, pause_s: float = 0.01, *, features: int = 4, seed: int = 5):
        self.url = url
        self.rows = np.random.default_rng(seed).standard_normal((16, features)).astype("float32").tolist()
        self.pause_s = pause_s
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        bodies = [{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(row)], "data": row}]}
                  for row in self.rows]
        with httpx.Client(timeout=60) as http:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                sent = time.time()
                try:
                    reply = http.post(self.url, json=bodies[i % len(bodies)])
                    status = reply.status_code
                    version = reply.json().get("model_version", "") if status == 200 else ""
                except httpx.HTTPError:
                    status, version = 0, ""
                self.answers.append((sent, status, version))
                self._stop.wait(self.pause_s)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
