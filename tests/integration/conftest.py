"""Integration tests share one local Ray cluster, started once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Test-only plugins (a deliberately faulty model architecture) that every Ray worker must import too.
PLUGINS = Path(__file__).resolve().parents[1] / "_plugins"


def use_plugins() -> None:
    """Put tests/_plugins on this process's path and on the path of every process it starts (Ray workers)."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(PLUGINS) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, str(PLUGINS)])


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
    use_plugins()
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


@pytest.fixture
def faulty_package(store):
    """Packages the faulty classifier (tests/_plugins): the iris MLP failing ``fail_rate`` of calls or sleeping
    in Serve replicas, gated for ``admit_to`` (it passes: it behaves outside a replica).

    With no faults and ``seed`` 0 it answers exactly as ``mlp_package()`` (same weights).
    """
    from factory.contract import Contract, Observability, Resources, default_registry, package

    use_plugins()
    registry = default_registry()
    if "faulty-classifier" not in registry:  # the registry was loaded before the plugin was on the path
        registry.load_entry_points()

    def make(*, fail_rate: float = 0.0, sleep_ms: float = 0.0, seed: int = 0,
             name: str = "iris", p99_latency_ms: float = 100.0, cpus: float = 0.1, max_batch_size: int = 8,
             sample_rate: float = 0.0, admit_to: str | None = "dev"):
        config = {"in_features": 4, "out_features": 3, "hidden": [8], "fail_rate": fail_rate, "sleep_ms": sleep_ms}
        signature = registry.get("faulty-classifier").expected(config)
        contract = Contract(name=name, inputs=signature.inputs, outputs=signature.outputs,
                            resources=Resources(cpus=cpus, memory_mb=256, max_batch_size=max_batch_size,
                                                p99_latency_ms=p99_latency_ms),
                            observability=Observability(sample_rate=sample_rate))
        pkg = package(store, registry.build("faulty-classifier", config, seed=seed).eval(), contract)
        if admit_to is not None:
            from serve_kit import gate

            gate(store, pkg.digest, admit_to)
        return pkg

    return make
