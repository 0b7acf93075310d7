"""A driver for a real cluster: every node opens the store itself and records something.

No store actor: each task builds ``Store()`` from its node's FACTORY_HOME (object
storage) and FACTORY_CATALOG (PostgreSQL), as cluster/raycluster.yaml and
cluster/ray-up.yaml set them. The driver then reads back what every node wrote.

    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml \
        -- python examples/cluster_store.py
"""

from __future__ import annotations

import socket

import ray

from factory.store import Store


@ray.remote(num_cpus=0.5)
def record(i: int) -> tuple[str, str]:
    store = Store()  # FACTORY_HOME and FACTORY_CATALOG of the node this task landed on
    blob = store.put_blob(f"written by task {i} on {socket.gethostname()}".encode(), name=f"cluster-check-{i}")
    return ray.get_runtime_context().get_node_id(), blob.digest


def main() -> None:
    ray.init(address="auto")
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    calls = [record.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(i)
             for i, node in enumerate(nodes)]
    store = Store()
    for node, digest in ray.get(calls):
        print(f"node {node[:12]}: {store.blobs.get(digest).decode()} ({digest[:19]})")
    print(f"{len(nodes)} node(s) wrote to {store.home}; the driver read every write back")


if __name__ == "__main__":
    main()
