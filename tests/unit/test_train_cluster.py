"""Which cluster a training job's processes talk to: their own, even where several Ray instances run."""

from __future__ import annotations

import pytest
import ray

from factory.train._cluster import connect, state_api_env


@pytest.fixture
def init_calls(monkeypatch):
    """``ray.init`` recorded instead of run (what is passed is the logic under test)."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_a_joined_cluster_is_named_to_every_process_of_the_job(init_calls):
    """Joining host:port gives the job RAY_ADDRESS, so Ray Train's placement-group cleaner asks that cluster."""
    assert connect("127.0.0.1:6379")
    (call,) = init_calls
    assert call["address"] == "127.0.0.1:6379"
    assert call["runtime_env"]["env_vars"]["RAY_ADDRESS"].endswith(":6379")


def test_a_started_cluster_with_a_dashboard_names_its_api_server(init_calls):
    """A local cluster started for a sweep gets a dashboard port chosen up front, given to its processes."""
    assert connect(num_cpus=2, dashboard=True)
    (call,) = init_calls
    assert call["address"] == "local" and call["num_cpus"] == 2 and call["include_dashboard"]
    url = call["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"]
    assert url == f"http://127.0.0.1:{call['dashboard_port']}"


def test_without_a_dashboard_or_an_address_nothing_is_added(init_calls):
    """Plain local training needs no State API, so its workers' environment is left alone."""
    connect(num_cpus=1)
    assert "runtime_env" not in init_calls[0] and init_calls[0]["include_dashboard"] is False


def test_a_ray_client_address_is_left_to_ray():
    """A ray:// address has no State API address to derive; nothing is set."""
    assert state_api_env("ray://head:10001") == {}
