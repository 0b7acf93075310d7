"""Fixtures every test layer shares: a fresh store root per test."""

from __future__ import annotations

import pytest

from factory.settings import Settings


@pytest.fixture
def store(tmp_path):
    """A fresh store under the test's own temporary folder."""
    from factory.store import Store

    return Store(tmp_path / "home", settings=Settings(home=str(tmp_path / "home")))
