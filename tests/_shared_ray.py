"""The shared test cluster's settings, and the test plugins every Ray worker must import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Test-only plugins (a deliberately faulty model architecture) that every Ray worker must import too.
PLUGINS = Path(__file__).resolve().parent / "_plugins"


def use_plugins() -> None:
    """Put tests/_plugins on this process's path and on the path of every process it starts (Ray workers)."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(PLUGINS) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(PLUGINS)])


# How the shared cluster starts; tests that need a cluster of their own (several nodes, a
# cluster they kill parts of) shut it down and start it again with these (``restart_shared_ray``).
SHARED_RAY = dict(
    # "local": always a cluster of our own. Without it ray.init() joins the latest
    # cluster started on this machine (another test run's, or a ray.cluster_utils head).
    address="local",
    num_cpus=2,
    object_store_memory=256 * 1024 * 1024,
    include_dashboard=False,
    namespace="factory-tests",
    log_to_driver=False,
    configure_logging=False,
)


def two_node_cluster(head: dict, second: dict):
    """A ``ray.cluster_utils.Cluster`` of a head and a second node: (cluster, the second node).

    A raylet gets 30 s to register; a loaded 2-core machine can miss that once, so a start
    that fails is shut down and tried once more.
    """
    from ray.cluster_utils import Cluster

    for attempt in (1, 2):
        cluster = Cluster()
        try:
            cluster.add_node(**head)
            return cluster, cluster.add_node(**second)
        except Exception:
            cluster.shutdown()
            if attempt == 2:
                raise
