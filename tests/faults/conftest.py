"""Fault-injection tests: kill, corrupt and tamper. Those on Ray use the session's shared cluster
(``ray_cluster`` in tests/conftest.py) unless they need one of their own."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items):
    # Collection hooks see every item, so mark only those under this folder.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.faults)
