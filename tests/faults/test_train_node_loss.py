"""Training survives a lost node: two nodes, one worker on each, the worker node removed mid-run.

It needs a ``ray.cluster_utils.Cluster`` of two nodes of its own, so under `make test` it runs
beside the shared lane (``own_cluster``); in a serial run it shuts the shared cluster down (the next
module that uses it starts it again).
"""

from __future__ import annotations

import pytest
import ray
from train_kit import OBJECT_STORE, after_first_checkpoint, code_in, config, dataset_of, store_in, train_env

from factory.train import train

pytestmark = pytest.mark.own_cluster


def test_a_removed_node_does_not_stop_the_run(tmp_path, monkeypatch):
    """Two nodes, one worker on each; the worker node is removed mid-run and the run still completes."""
    from _shared_ray import two_node_cluster

    train_env(monkeypatch)
    store = store_in(tmp_path)
    dataset = dataset_of(store)
    ray.shutdown()
    cluster, node = two_node_cluster(dict(num_cpus=1, object_store_memory=OBJECT_STORE, include_dashboard=False),
                                     dict(num_cpus=1, object_store_memory=OBJECT_STORE))
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        spread = config(dataset, compute={"workers": 2, "cpus_per_worker": 0.5, "placement": "spread"})
        watcher = after_first_checkpoint(tmp_path / "ray", lambda: cluster.remove_node(node, allow_graceful=False))
        result = train(spread, store=store, **code_in(tmp_path), storage_path=str(tmp_path / "ray"))
        watcher.join(timeout=5)
        assert node not in cluster.worker_nodes, "the node was never removed"
        assert result.restarts >= 1
        assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert result.metrics["val_accuracy"] > 0.6
    finally:
        ray.shutdown()
        cluster.shutdown()
