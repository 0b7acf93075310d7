"""Integration tests share one local Ray cluster, started once per session."""

from __future__ import annotations

from pathlib import Path

import os

import pytest


def pytest_collection_modifyitems(items):
    # Collection hooks see every item, so mark only those under this folder.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


# How the shared cluster starts; tests that need a cluster of their own (several nodes)
# shut it down and start it again with these (see ``restart_shared_ray``).
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


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with a bounded object store, shut down after the session."""
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    # Serve's proxies retry model requests whose replica died (factory.serve._proxy).
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "factory.serve.proxy_middlewares")
    ctx = ray.init(**SHARED_RAY)
    yield ctx
    ray.shutdown()


@pytest.fixture(scope="session")
def restart_shared_ray():
    """Call it after a test's own cluster is gone: brings the shared one back if it was running."""

    def restart(was_running: bool) -> None:
        import ray

        if was_running and not ray.is_initialized():
            ray.init(**SHARED_RAY)

    return restart
