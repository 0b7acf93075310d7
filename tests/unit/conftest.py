"""Unit tests run with Ray forbidden: the logic they test must not need a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def no_shared_ray():
    """Unit tests run without Ray: the integration tests' shared cluster (same session, run
    first) is shut down before the first unit test, so a unit test sees what a user's fresh
    process sees (e.g. that a command refuses to start before any cluster exists)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(autouse=True)
def disallow_ray_init(monkeypatch, no_shared_ray):
    import ray

    def raise_on_init(*args, **kwargs):
        raise RuntimeError("Unit tests should not depend on Ray being initialized.")

    monkeypatch.setattr(ray, "init", raise_on_init)


def pytest_collection_modifyitems(items):
    # Collection hooks see every item, so mark only those under this folder.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.unit)
