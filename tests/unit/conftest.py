"""Unit tests run with Ray forbidden: the logic they test must not need a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def disallow_ray_init(monkeypatch):
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
