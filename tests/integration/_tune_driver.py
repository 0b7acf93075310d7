"""Runs a sweep in its own process and prints the result as JSON (used by test_tune.py).

Ray Train inside Tune frees a stopped trial's placement group through the State API,
which finds its cluster by ``RAY_ADDRESS`` or, failing that, by looking for the one
Ray instance on the machine. Test machines run several, so this driver starts its
cluster (with the dashboard) on a port chosen here and gives every Ray process
``RAY_ADDRESS`` pointing at it.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys

import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def main(home: str, sweep_path: str, storage: str) -> None:
    import ray
    from ray._private.services import get_node_ip_address
    from ray.cluster_utils import Cluster

    from factory.settings import Settings
    from factory.store import Store
    from factory.train import SweepConfig, tune

    address = f"{get_node_ip_address()}:{_free_port()}"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 200 * 2**20, "include_dashboard": True,
        "gcs_server_port": int(address.rsplit(":", 1)[1]), "env_vars": {"RAY_ADDRESS": address},
    })
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        store = Store(home, settings=Settings(home=home))
        with open(sweep_path) as f:
            sweep = SweepConfig.model_validate(yaml.safe_load(f))
        result = tune(sweep, store=store, storage_path=storage)
        print("RESULT " + json.dumps(dataclasses.asdict(result), default=str), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
