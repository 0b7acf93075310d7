"""Runs a sweep in its own process and prints the result as JSON (used by test_tune.py).

It starts a one-node cluster with the dashboard (Ray Train inside Tune needs the State
API) and hands its address to ``tune``, which joins it. Nothing here tells Ray's
processes which cluster is theirs: ``tune`` must, since the test machine runs other
Ray instances (the shared test cluster among them).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import yaml


def main(home: str, sweep_path: str, storage: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from factory.settings import Settings
    from factory.store import Store
    from factory.train import SweepConfig, tune

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 200 * 2**20, "include_dashboard": True})
    try:
        store = Store(home, settings=Settings(home=home))
        with open(sweep_path) as f:
            sweep = SweepConfig.model_validate(yaml.safe_load(f))
        result = tune(sweep, store=store, storage_path=storage, address=cluster.address)
        print("RESULT " + json.dumps(dataclasses.asdict(result), default=str), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
