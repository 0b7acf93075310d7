"""Two Ray nodes open one store directly (FACTORY_HOME on S3, FACTORY_CATALOG), no store actor.

Both nodes run on this machine, so the SQLite catalog on local disk is shared by them,
as a PostgreSQL catalog is on a real cluster. Every write from one node is visible to
the other at once, and 16 writers moving one ref by compare-and-swap lose no update.
"""

from __future__ import annotations

import sys
import uuid

import pyarrow as pa
import pytest

from factory.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]  # beside the shared lane under make test

WRITERS = 16


@pytest.fixture(scope="module")
def two_nodes(s3_server, tmp_path_factory):
    """A head and a second node (bounded CPUs and memory); tasks get FACTORY_HOME and FACTORY_CATALOG."""
    import ray
    from _shared_ray import two_node_cluster
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    ray.shutdown()  # a cluster of its own (a serial run's next module's ray_cluster starts the shared one again)
    home = f"s3://factory-tests/two-nodes-{uuid.uuid4().hex[:8]}"
    catalog = str(tmp_path_factory.mktemp("two-nodes") / "catalog.db")
    env = {**s3_server.env(), "FACTORY_HOME": home, "FACTORY_CATALOG": catalog}
    small = 80 * 1024 * 1024
    cluster, second = two_node_cluster(dict(num_cpus=2, object_store_memory=small, include_dashboard=False),
                                       dict(num_cpus=2, object_store_memory=small))
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": env}, namespace="factory-two-nodes",
                 log_to_driver=False, configure_logging=False)
        head_id = ray.get_runtime_context().get_node_id()
        driver = Store(settings=s3_server.settings(home, catalog=catalog))
        yield {"head": head_id, "second": second.node_id, "store": driver}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _on(node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def _write(label: str, expected_shared: str | None, store: Store | None = None) -> dict:
    """Put a blob, add a dataset version, move a ref (on a node: through ``Store()`` from its environment)."""
    import ray

    store = store or Store()
    blob = store.put_blob(f"written on {label}".encode(), name=f"blob-{label}")
    version = store.datasets.add(pa.table({"id": [1, 2, 3], "node": [label] * 3}), name=f"rows-{label}", key=["id"])
    store.refs.set("dataset/shared", version.digest, expected=expected_shared, reason=f"moved on {label}")
    return {"node": ray.get_runtime_context().get_node_id(), "blob": blob.digest, "dataset": version.digest}


def _read(written: dict, label: str) -> dict:
    """What a store opened from the environment sees of another node's writes."""
    import ray

    store = Store()
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "blob": store.blobs.get(written["blob"]).decode(),
        "rows": store.datasets.read(f"rows-{label}").column("node").to_pylist(),
        "shared": store.refs.get("dataset/shared"),
    }


def test_writes_on_one_node_are_seen_on_the_other_at_once(two_nodes):
    """A task on the second node records a blob, a dataset version and a ref move; the head sees them, and back."""
    import ray

    store = two_nodes["store"]
    write = ray.remote(num_cpus=0.5)(_write)
    there = ray.get(write.options(scheduling_strategy=_on(two_nodes["second"])).remote("second", None))
    assert there["node"] == two_nodes["second"] != two_nodes["head"]
    assert store.blobs.get(there["blob"]) == b"written on second"
    assert store.datasets.read("rows-second").column("node").to_pylist() == ["second"] * 3
    assert store.refs.get("dataset/shared") == there["dataset"]

    here = _write("head", expected_shared=there["dataset"], store=store)
    read = ray.remote(num_cpus=0.5)(_read)
    seen = ray.get(read.options(scheduling_strategy=_on(two_nodes["second"])).remote(here, "head"))
    assert seen == {"node": two_nodes["second"], "blob": "written on head", "rows": ["head"] * 3,
                    "shared": here["dataset"]}
    assert [c.new for c in store.refs.history("dataset/shared")] == [there["dataset"], here["dataset"]]


def _move_by_cas(i: int, ref: str) -> dict:
    """Move ``ref`` to this writer's own blob by compare-and-swap, retrying each lost race."""
    import random
    import time

    import ray

    from factory.errors import RefConflictError

    store = Store()
    target = store.put_blob(f"writer {i}".encode(), name=f"writer-{i}").digest
    for attempt in range(1, 1001):
        current = store.refs.get(ref)
        try:
            store.refs.set(ref, target, expected=current, reason=f"writer {i}")
            return {"node": ray.get_runtime_context().get_node_id(), "target": target, "attempts": attempt}
        except RefConflictError:
            time.sleep(random.uniform(0, 0.02))
    raise AssertionError(f"writer {i} lost 1000 races in a row")


def test_sixteen_writers_on_two_nodes_lose_no_update(two_nodes):
    """16 writers, half on each node, moving one ref by CAS: the history holds every move, each from the one before."""
    import ray

    store = two_nodes["store"]
    ref = f"shared/head-{uuid.uuid4().hex[:6]}"
    move = ray.remote(num_cpus=0.25)(_move_by_cas)
    nodes = [two_nodes["head"], two_nodes["second"]]
    results = ray.get([move.options(scheduling_strategy=_on(nodes[i % 2])).remote(i, ref) for i in range(WRITERS)])
    assert sorted(r["node"] for r in results) == sorted(nodes * (WRITERS // 2))
    history = store.refs.history(ref)
    assert len(history) == WRITERS
    assert sorted(c.new for c in history) == sorted(r["target"] for r in results)
    assert [c.old for c in history] == [None] + [c.new for c in history[:-1]]
    assert store.refs.get(ref) == history[-1].new
