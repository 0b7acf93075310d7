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


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with a bounded object store, shut down after the session."""
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    # Serve's proxies retry model requests whose replica died (factory.serve._proxy).
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "factory.serve.proxy_middlewares")
    ctx = ray.init(
        address="local",  # a cluster of our own, even when `ray start` left one running on this machine
        num_cpus=2,
        object_store_memory=256 * 1024 * 1024,
        include_dashboard=False,
        namespace="factory-tests",
        log_to_driver=False,
        configure_logging=False,
    )
    yield ctx
    ray.shutdown()
