"""A small factory history in a real store, made through the layers' public APIs, for trace and velocity tests.

Source datasets, two feature views, a point-in-time training set, a training config,
code and environment records, a training run, model packages behind their contracts
(parents as training records them), dev gate runs (real policies, signed and logged), the
incumbent in ``model/iris/prod``, and inference log rows as serving writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from factory.runtime._demo_data import ACTIVITY, ENTITY, PROFILE, TTL, generate
from factory.settings import Settings
from factory.store import Store

MODEL, CONTROLLER = "iris", "factory-controller"


@dataclass
class History:
    store: Store
    training_set: str
    views: list[str]
    sources: list[str]
    config: str
    code: str
    environment: str
    run_id: str
    models: list[str]


def make_store(tmp_path, actor: str = CONTROLLER) -> Store:
    home = str(tmp_path / "home")
    return Store(home, settings=Settings(home=home, actor=actor))


def package_model(store: Store, parents: list[str], *, seed: int) -> str:
    from factory.contract import Contract, Observability, Resources, default_registry, package

    config = {"in_features": 4, "out_features": 3, "hidden": [8]}
    signature = default_registry().get("mlp-classifier").expected(config)
    contract = Contract(name=MODEL, inputs=signature.inputs, outputs=signature.outputs,
                        resources=Resources(cpus=0.1, memory_mb=256, max_batch_size=8),
                        observability=Observability(sample_rate=1.0))
    module = default_registry().build("mlp-classifier", config, seed=seed).eval()
    return package(store, module, contract, parents=parents).digest


def history(tmp_path, *, models: int = 2) -> History:
    """The lineage of ``models`` packages trained on one PIT training set, each gated with the dev set."""
    from factory.gates import run_gate
    from factory.store.features import FeatureView

    store = make_store(tmp_path)
    book = generate(60, 120, seed=2)
    profiles = store.datasets.add(book.profiles, name="customer-profiles", key=[ENTITY, "ts"])
    activity = store.datasets.add(book.activity, name="card-activity", key=[ENTITY, "ts"])
    apps = store.datasets.add(book.applications, name="applications", key=["application_id"])
    views = [store.features.register(FeatureView(name=n, entities=(ENTITY,), timestamp="ts", ttl=TTL, features=f,
                                                 source=s.digest)).digest
             for n, f, s in (("customer-profile", PROFILE, profiles), ("card-activity", ACTIVITY, activity))]
    joined = store.features.get_historical_features(apps.digest, ["customer-profile", "card-activity"],
                                                    timestamp="ts", name="credit-training")
    training_set = joined.version.digest
    config = store.artifacts.add("training-config", name=MODEL, parents=[training_set],
                                 metadata={"architecture": "mlp-classifier@1", "hyperparameters": {"lr": 0.01},
                                           "seed": 7, "dataset": training_set}).digest
    code = store.artifacts.add("code", metadata={"type": "factory.code/v1", "repository": "git",
                                                 "commit": "0" * 40, "changes": None}).digest
    env = store.artifacts.add("environment", metadata={"type": "factory.environment/v1", "python": "CPython 3.11",
                                                       "distributions": {"numpy": "2"}}).digest
    run = store.runs.start("train", config={"name": MODEL}, parents=[config, code, env, training_set], name=MODEL)
    run.finish("succeeded")
    digests = []
    for seed in range(models):
        digest = package_model(store, [config, training_set, code, env, run.digest], seed=seed)
        run_gate(store, digest, "dev", parallel=False)
        digests.append(digest)
    store.refs.set(f"model/{MODEL}/prod", digests[0], reason="first version")
    return History(store, training_set, views, [profiles.digest, activity.digest, apps.digest], config, code, env,
                   run.id, digests)


def log_requests(store: Store, digest: str, request_ids: list[str], *, at: datetime | None = None) -> None:
    """Log one inference row per request id as the model server does (its own table layout)."""
    from factory.contract import load
    from factory.serve import LogRecord, package_contract
    from factory.serve._log import InferenceLog, log_name
    from factory.store.features import FeatureLog

    contract = package_contract(store, digest)
    model = load(store, digest)
    at = at or datetime.now(UTC)
    records = []
    for i, rid in enumerate(request_ids):
        x = np.full((1, 4), float(i % 7), dtype=np.float32)
        out = {k: v.numpy() for k, v in model.predict({"features": x}).items()}
        records.append(LogRecord(rid, digest, digest[7:19], contract, at + timedelta(milliseconds=i), 1.5,
                                 {"features": x}, out))
    log = InferenceLog(FeatureLog(store, log_name(MODEL)).writer(flush_seconds=0.05))
    for record in records:
        log.submit(record)
    log.writer.close()
