"""Integration tests share one local Ray cluster with the fault tests (``ray_cluster`` in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items):
    # Collection hooks see every item, so mark only those under this folder.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def faulty_package(store):
    """Packages the faulty classifier (tests/_plugins): the iris MLP failing ``fail_rate`` of calls or sleeping
    in Serve replicas, gated for ``admit_to`` (it passes: it behaves outside a replica).

    With no faults and ``seed`` 0 it answers exactly as ``mlp_package()`` (same weights).
    """
    from factory.contract import Contract, Observability, Resources, default_registry, package

    from _shared_ray import use_plugins

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


_RAY_HEAD = pytest.StashKey()


@pytest.fixture(scope="session")
def ray_head(request, tmp_path_factory):
    """A head node started with ``ray start --head`` (dashboard, jobs API, token), shared by the session's tests
    that submit to a real cluster: a ``_ray_head.RayHead`` (``address``, ``dashboard``, ``env``, ``ray(...)``).

    It is stopped after the last test that uses it (``pytest_runtest_teardown`` below), not at the
    end of the session: idle, a head costs about 5 % of a core, which the tests after it would pay.
    """
    from _ray_head import RayHead

    head = RayHead.start(tmp_path_factory.mktemp("ray-head"))
    request.config.stash[_RAY_HEAD] = head
    yield head
    head.stop()


def pytest_runtest_teardown(item, nextitem):
    head = item.config.stash.get(_RAY_HEAD, None)
    if head is None or "ray_head" not in item.fixturenames:
        return
    later = item.session.items[item.session.items.index(item) + 1:]
    if not any("ray_head" in other.fixturenames for other in later):
        head.stop()  # the fixture's own teardown, at the end of the session, finds it stopped
