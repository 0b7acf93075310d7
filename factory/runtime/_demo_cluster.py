"""The demo's embedded Ray cluster: one local head with the dashboard, bounded, on free ports.

Ray Tune's trials free their placement groups through the State API, which finds the
cluster by ``RAY_ADDRESS``; a machine may run several Ray instances, so the head is
started on a port chosen here and every Ray process gets ``RAY_ADDRESS`` pointing at it.
Serve's proxies get factory's retry middleware (a killed replica costs no request).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["EmbeddedCluster", "embedded_cluster", "free_port"]


def free_port() -> int:
    """A TCP port free on this machine now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class EmbeddedCluster:
    address: str
    dashboard_url: str | None


@contextlib.contextmanager
def embedded_cluster(*, num_cpus: int = 2, object_store_mb: int = 256, dashboard: bool = True) -> Iterator[EmbeddedCluster]:
    """Connect to the cluster in ``RAY_ADDRESS`` when set, else start a local head for the block's duration."""
    import ray

    if ray.is_initialized():
        yield EmbeddedCluster(ray.get_runtime_context().gcs_address, None)
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)
        try:
            yield EmbeddedCluster(os.environ["RAY_ADDRESS"], _dashboard_url())
        finally:
            ray.shutdown()
        return

    from ray._private.services import get_node_ip_address
    from ray.cluster_utils import Cluster

    address = f"{get_node_ip_address()}:{free_port()}"
    env = {"RAY_ADDRESS": address,
           "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "factory.serve.proxy_middlewares",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
           # One local node is never preempted: no watcher process per training run.
           "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    head = {"num_cpus": num_cpus, "object_store_memory": object_store_mb * 2**20, "include_dashboard": dashboard,
            "gcs_server_port": int(address.rsplit(":", 1)[1]), "env_vars": env}
    if dashboard:
        head["dashboard_port"] = free_port()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield EmbeddedCluster(cluster.address, _dashboard_url())
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _dashboard_url() -> str | None:
    import ray

    url = ray.get_runtime_context().get_dashboard_url() if hasattr(ray.get_runtime_context(), "get_dashboard_url") \
        else None
    if not url:
        with contextlib.suppress(Exception):
            url = ray._private.worker.get_dashboard_url()
    return f"http://{url}" if url and not url.startswith("http") else url
