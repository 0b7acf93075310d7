"""Fixtures every test layer shares: a fresh store root per test, and an S3 server."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from factory.settings import Settings


@pytest.fixture
def store(tmp_path):
    """A fresh store under the test's own temporary folder."""
    from factory.store import Store

    return Store(tmp_path / "home", settings=Settings(home=str(tmp_path / "home")))


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
