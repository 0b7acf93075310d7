"""Fixtures every test layer shares: a fresh store per test, on each catalog backend where asked,
an S3 server, and Ray Serve on a free port.

A test module marked ``pytestmark = pytest.mark.catalogs`` runs every test that uses the
``store`` fixture (or ``catalog_location``/``store_settings``) twice: once with the SQLite
catalog in the home, once with a fresh database on a throwaway PostgreSQL server started
for the session (see ``_postgres.py``). Other modules get SQLite only.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import hypothesis
import pytest

from factory.settings import Settings

CATALOG_BACKENDS = ("sqlite", "postgresql")

# Hypothesis fails an example that takes over 200 ms by default: a timing check, which a loaded
# 2-core machine trips (one example took 958 ms). Tests that bound their time (the fuzz tests)
# set their own deadline, which this leaves as it is.
hypothesis.settings.register_profile("factory", deadline=None)
hypothesis.settings.load_profile("factory")


def pytest_configure(config):
    config.addinivalue_line("markers", "catalogs: run once against each catalog backend (SQLite, PostgreSQL)")
    config.addinivalue_line("markers", "ray: uses the shared Ray cluster: runs in the Ray lane under make test")
    config.addinivalue_line("markers", "own_cluster: starts a Ray cluster of its own: runs beside the Ray lane")
    config.addinivalue_line("markers", "solo: runs while the other lane runs nothing (see _solo below)")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker and not os.environ.get(_SOLO_DIR):
        # The controller, before it starts the workers, which inherit the variable.
        os.environ[_SOLO_DIR] = tempfile.mkdtemp(prefix="factory-lanes-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop(_SOLO_DIR), ignore_errors=True))
    if worker:
        # Each lane keeps Ray's files apart: `ray.init(address="auto")` (the CLI's connect) joins the
        # latest cluster named in $RAY_TMPDIR/ray_current_cluster, which a ray.cluster_utils head of the
        # other lane would otherwise be.
        os.environ.setdefault("RAY_TMPDIR", f"/tmp/ray-{worker}")


# `make test` runs two pytest-xdist workers (`-n 2 --dist loadgroup`, scheduled by ``Lanes`` below):
# one lane takes every test on the shared Ray cluster, in collection order, so they keep sharing one
# cluster and one Serve as in a serial run; the other lane takes the rest, a whole module at a time
# (module fixtures are built once). ``pytest_collection_modifyitems`` puts the shared lane first, so
# the first worker takes it at once, then the modules whose cluster is one of their own (``own_cluster``:
# the submitted cycle job, `ray start --head` clients, two-node clusters), the longest work of the other
# lane, so that it starts early and overlaps the shared lane, then the rest.
# Ray tests mostly wait (process start-ups, rollout windows, polls): the other lane's tests use that time.
RAY_LANE = "ray"
_USES_RAY = re.compile(r"\bimport ray\b|\bfrom ray\b|\bray\.|ray_cluster|serve_url|serve_http|ray start|\bray\b.*job")
_OWN_CLUSTER = "pytest.mark.own_cluster"


def _lane(module: Path, cache: dict[Path, str]) -> str:
    """``RAY_LANE`` for a module on the shared cluster, else the module's own scope."""
    if module not in cache:
        folder = module.parent.name  # integration: every module needs Ray; faults: those that say so
        text = module.read_text() if module.suffix == ".py" and module.exists() else ""
        shared = _OWN_CLUSTER not in text and (folder == "integration" or (folder == "faults" and _USES_RAY.search(text)))
        cache[module] = RAY_LANE if shared else str(module)
    return cache[module]


def pytest_xdist_make_scheduler(config, log):
    """Schedules by lane (see above). xdist's own ``loadgroup`` reads ``xdist_group`` marks into the test ids,
    which pytest 9 no longer lets a plugin rewrite, so the lanes are decided here, from the test ids."""
    from xdist.scheduler import LoadScopeScheduling

    cache: dict[Path, str] = {}

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _lane(Path(config.rootpath, nodeid.split("::", 1)[0]), cache)

    config.option.loadscopereorder = False  # collection order: the shared lane's modules keep their order
    return Lanes(config, log)


def pytest_collection_modifyitems(config, items):
    cache: dict[Path, str] = {}
    for item in items:
        if item.get_closest_marker("ray") or _lane(item.path, cache) == RAY_LANE:
            item.add_marker(pytest.mark.ray)

    def lane_order(item) -> tuple[int, bool]:
        solo = item.get_closest_marker("solo") is not None  # last in its lane (see _solo)
        if _lane(item.path, cache) == RAY_LANE:
            return 0, solo
        return (1 if item.get_closest_marker("own_cluster") else 2), solo

    items.sort(key=lane_order)  # stable: collection order within each part (see the lanes above)


# A test that bounds what a user sees under load (the replica killed mid-load: at most 0.1 % of
# requests lost) measures the other lane instead when that lane trains beside it: a CI run's
# survivor answered 6 requests/s of 25 while the other lane ran the cycle job, and 7 requests timed
# out in the backlog. A ``solo`` test therefore runs while the other lane runs nothing: every test
# takes a shared lock for its whole protocol (set-up, call, tear-down), a ``solo`` one the exclusive
# lock; a turnstile taken before either lets a waiting ``solo`` test in ahead of the next shared one.
# ``solo`` tests go last in their lane, when the other lane has its short tests left, so the wait is short.
_SOLO_DIR = "FACTORY_TEST_LANES_LOCK"


@contextlib.contextmanager
def _solo(item):
    folder = os.environ.get(_SOLO_DIR)
    if not folder or not os.environ.get("PYTEST_XDIST_WORKER"):
        yield  # one lane: nothing runs beside it
        return
    solo = item.get_closest_marker("solo") is not None
    with open(os.path.join(folder, "turnstile"), "a") as turnstile, open(os.path.join(folder, "lanes"), "a") as lanes:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if not solo:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(lanes, fcntl.LOCK_EX if solo else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lanes, fcntl.LOCK_UN)
            if solo:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with _solo(item):
        return (yield)


def pytest_generate_tests(metafunc):
    if "catalog_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("catalogs"):
        metafunc.parametrize("catalog_backend", CATALOG_BACKENDS)


@pytest.fixture
def catalog_backend() -> str:
    """The catalog backend of this test: SQLite unless the module is marked ``catalogs``."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 for the whole session, removed after it."""
    from _postgres import serving

    yield from serving()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database holding the catalog schema (no store id yet), dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def catalog_location(request, catalog_backend, tmp_path) -> str:
    """Where this test's store keeps its catalog: the SQLite file in its home, or a fresh PostgreSQL database."""
    if catalog_backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "home" / "catalog.db")


@pytest.fixture
def store_settings(tmp_path, catalog_location) -> Settings:
    """Settings of a fresh store under the test's own temporary folder, on this test's catalog."""
    return Settings(home=str(tmp_path / "home"), catalog=catalog_location)


@pytest.fixture
def store(store_settings):
    """A fresh store under the test's own temporary folder."""
    from factory.store import Store

    return Store(store_settings.home, settings=store_settings)


@pytest.fixture(scope="module")
def ray_cluster(_ray_session):
    """The bounded local Ray cluster that the fault and integration tests share: started at first use and
    kept from module to module (a start costs seconds of both cores), started again for a module that
    follows one which needed a cluster of its own; shut down after the session (the unit tests, last,
    shut it down first)."""
    import ray

    from _shared_ray import SHARED_RAY

    if not ray.is_initialized():
        ray.init(**SHARED_RAY)
    return ray.get_runtime_context()


@pytest.fixture(scope="session")
def _ray_session():
    """What every process of the shared cluster inherits; shuts the cluster down at the end of the session."""
    import ray

    from _shared_ray import use_plugins
    from factory.serve import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    # Ray Train reports each epoch on this poll (2 s by default).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    # Serve's proxies retry model requests whose replica died (factory.serve._proxy).
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    use_plugins()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def restart_shared_ray():
    """Call it after a test's own cluster is gone: brings the shared one back at once if it was running.

    A module whose own cluster is its last need not: the next module's ``ray_cluster`` starts it."""

    def restart(was_running: bool) -> None:
        import ray

        from _shared_ray import SHARED_RAY

        if was_running and not ray.is_initialized():
            ray.init(**SHARED_RAY)

    return restart


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback for the whole session, with a bucket ``factory-tests``."""
    from _servers import S3Server

    server = S3Server.start()
    try:
        server.create_bucket("factory-tests")
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_server, tmp_path) -> Settings:
    """Settings of a fresh store under its own prefix on the S3 server (the catalog on local disk)."""
    home = f"s3://factory-tests/{uuid.uuid4().hex}"
    return s3_server.settings(home, catalog=str(tmp_path / "catalog.db"))


@pytest.fixture(params=["local", "s3"])
def home_settings(request, tmp_path) -> Settings:
    """Settings of a fresh store, once on a local folder and once on S3: one suite for both."""
    if request.param == "s3":
        return request.getfixturevalue("s3_settings")
    return Settings(home=str(tmp_path / "home"))


@pytest.fixture
def any_store(home_settings):
    """A fresh store on each kind of home (see ``home_settings``)."""
    from factory.store import Store

    return Store(settings=home_settings)


@pytest.fixture
def mlp_package(store):
    """Packages a built-in MLP classifier (4 features, 3 classes) into ``store``; contract fields as given.

    The package is gated for ``admit_to`` (by default dev: contract and security), so that
    environment admits it (``serve_kit.package_mlp``).
    """
    from serve_kit import package_mlp

    return functools.partial(package_mlp, store)



@pytest.fixture(scope="module")
def serve_http(ray_cluster, _serve_starts):
    """Ray Serve on a free loopback port: started once for the session (like the cluster) and again
    only after a test restarted the cluster; every application is deleted after each test."""
    return _serve_starts()


@pytest.fixture(scope="session")
def _serve_starts(_ray_session):
    """``ensure()``: the URL of Serve on the current shared cluster, starting it there if it is not running."""
    import socket

    import ray
    from ray import serve

    running: dict[str, str] = {}  # the shared cluster's head node (new at each start) -> Serve's URL on it

    def ensure() -> str:
        cluster = ray.get_runtime_context().get_node_id()
        if cluster not in running:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            running.clear()
            running[cluster] = f"http://127.0.0.1:{port}"
        return running[cluster]

    yield ensure
    if running and ray.is_initialized():
        serve.shutdown()


@pytest.fixture
def serve_url(serve_http):
    """The Serve base URL for one test; the applications the test started are deleted after it.

    What ran before the test stays: a module's shared deployment (``served`` in test_serve.py),
    and the ``/v2`` root app, which holds no state and cost each test seconds to start again.
    """
    from ray import serve

    from factory.serve import ROOT_APP

    before = set(serve.status().applications) | {ROOT_APP}
    yield serve_http
    for name in set(serve.status().applications) - before:
        serve.delete(name)


@pytest.fixture
def replace_with_non_file(tmp_path):
    """``replace(path, thing)``: a FIFO, or a link to a copy elsewhere, where the file at ``path`` was."""
    def replace(path: str | os.PathLike[str], thing: str) -> None:
        data = Path(path).read_bytes()
        os.remove(path)
        if thing == "fifo":
            os.mkfifo(path)
        else:
            target = tmp_path / f"elsewhere-{uuid.uuid4().hex}"
            target.write_bytes(data)
            os.symlink(target, path)

    return replace
