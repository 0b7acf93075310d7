"""Shared makings for the gates tests: keys, signed attestations, real packages on real datasets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import torch

from factory.contract import Contract, default_registry, package
from factory.gates import KeyRing, PolicyResult, TransparencyLog, attest

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUBJECT = "sha256:" + "ab" * 32


def keyring(tmp_path, name="keys", clock=None) -> KeyRing:
    return KeyRing(tmp_path / name, clock=clock)


def envelope(signer, i: int = 0, *, at: datetime | None = None, verdict: str = "pass"):
    """A real signed attestation, distinct for each ``i``."""
    result = PolicyResult("contract", "1.0", verdict, f"result {i}", {"i": i})
    return attest(result, subject_name="iris", subject_digest=SUBJECT, predicate_type="https://factory.dev/t/v1",
                  signer=signer, at=at or T0 + timedelta(seconds=i), actor="tester")


def memory_log(keys: KeyRing, origin: str = "factory.test/log") -> TransparencyLog:
    log_key = keys.signer("log")
    keys.signer("attestation")
    return TransparencyLog.in_memory(origin=origin, trust=keys.trusted(), signer=log_key)


# -- packages with known behaviour ------------------------------------------------------

CONFIG = {"in_features": 2, "out_features": 2, "hidden": [2]}


def _threshold_model(column: int, at: float):
    """An MLP classifier whose label is 1 exactly when feature ``column`` exceeds ``at``."""
    model = default_registry().build("mlp-classifier", CONFIG, seed=0)
    first, last = model.layers[0], model.layers[2]
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, column], first.weight[1, column] = 1.0, -1.0
        first.bias.copy_(torch.tensor([-at, at]))
        last.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        last.bias.zero_()
    return model.eval()


def contract(name: str = "credit") -> Contract:
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    return Contract(name=name, inputs=sig.inputs, outputs=sig.outputs)


def fair_package(store, **kwargs):
    """Decides on the score ``x`` alone (column 0)."""
    return package(store, _threshold_model(0, 0.0), contract(), **kwargs)


def biased_package(store, **kwargs):
    """Decides on the sensitive ``group`` (column 1) alone."""
    return package(store, _threshold_model(1, 0.5), contract(), **kwargs)


def credit_table(n: int = 400, *, seed: int = 0, groups=(0, 1), shift: float = 0.0) -> pa.Table:
    """Rows where the label is ``x > 0`` and ``x`` is independent of ``group``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) + shift
    group = np.asarray(groups)[np.arange(n) % len(groups)]
    return pa.table({"id": np.arange(n), "x": x, "group": group.astype(np.int64),
                     "income": rng.standard_normal(n) * 10 + 50, "label": (x > 0).astype(np.int64)})


def add_dataset(store, name: str, table: pa.Table) -> str:
    return store.datasets.add(table, name=name, key=["id"]).digest


# -- stores that sign: keys and actor of their own --------------------------------------

def gated_store(tmp_path, *, actor: str = "alice", clock=None, name: str = "home"):
    """A fresh store whose keys folder is under the test's own folder (never the user's config)."""
    from factory.settings import Settings
    from factory.store import Store

    settings = Settings(home=str(tmp_path / name), keys=str(tmp_path / f"{name}-keys"), actor=actor)
    return Store(settings=settings, clock=clock)


def as_actor(store, actor: str):
    """The same store home, acting as ``actor``."""
    from dataclasses import replace

    from factory.store import Store

    return Store(settings=replace(store.settings, actor=actor), clock=store.clock)


def quick_set(*policies: str, name: str = "quick", **configs):
    """A policy set of the given built-ins (configs by policy id, '-' written as '_')."""
    from factory.gates import PolicySet, PolicySpec

    return PolicySet(name=name, policies=tuple(PolicySpec(id=p, config=configs.get(p.replace("-", "_"), {}))
                                               for p in policies))


def quality_config(minimum: float, dataset: str = "credit") -> dict:
    return {"dataset": dataset, "label": "label", "features": ["x", "group"], "thresholds": {"accuracy": {"min": minimum}}}
