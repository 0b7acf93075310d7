"""Fault-injection tests: kill, corrupt and tamper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items):
    # Collection hooks see every item, so mark only those under this folder.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="module")
def ray_cluster():
    """A bounded local Ray cluster for one module (the integration tests' one if it is already up)."""
    import ray

    if ray.is_initialized():
        yield ray.get_runtime_context()
        return
    from factory.serve import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    yield ray.init(address="local", num_cpus=2, object_store_memory=256 * 1024 * 1024, include_dashboard=False,
                   namespace="factory-tests", log_to_driver=False, configure_logging=False)
    ray.shutdown()
