"""Store homes: a home that cannot be used fails in one line naming it; S3 settings come from one place."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from factory.errors import StoreHomeError, UserError
from factory.settings import Settings
from factory.store import Store
from factory.store import _fs

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # The timeout only stops a hung run from hanging the suite; a hang fails the test.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACTORY_"))}
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120,
                          env={**base, "COLUMNS": "200", **(env or {})})


def _one_line_naming(res: subprocess.CompletedProcess, home: str, message: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert home in lines[0] and message in lines[0], lines[0]
    assert "Traceback" not in res.stderr


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    return path


@pytest.mark.parametrize("verb", [["store", "put", "{file}"], ["dataset", "add", "{file}", "--name", "d"],
                                  ["dataset", "list"], ["store", "verify"]])
def test_an_unknown_scheme_is_one_line_naming_the_home(a_file, verb):
    """--home bogus://x says the scheme is unknown and which ones work, instead of an Arrow error."""
    args = [a.format(file=a_file) for a in verb]
    _one_line_naming(_cli(*args, "--home", "bogus://x"), "bogus://x", "unknown scheme 'bogus'")


@pytest.mark.parametrize("below", [False, True], ids=["the-file", "below-a-file"])
def test_a_file_given_as_home_is_one_line_naming_it(a_file, tmp_path, below):
    """A file where the home folder should be (or above it) is named, and nothing is written next to it."""
    home = str(a_file / "store") if below else str(a_file)
    res = _cli("store", "put", str(a_file), "--home", home)
    _one_line_naming(res, home, "not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_an_unreachable_endpoint_fails_fast_in_one_line(a_file, tmp_path):
    """An S3 endpoint nobody listens on is reported at once, naming the home and the endpoint, not retried for minutes."""
    from _servers import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {"FACTORY_S3_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "FACTORY_CATALOG": str(tmp_path / "catalog.db")}
    for args in (["store", "put", str(a_file)], ["dataset", "add", str(a_file), "--name", "d"]):
        res = _cli(*args, "--home", "s3://bucket/prefix", env=env)
        _one_line_naming(res, "s3://bucket/prefix", "cannot be reached")
        assert endpoint in res.stderr


def test_a_missing_bucket_is_named_with_the_fix(a_file, tmp_path, s3_server):
    """A home in a bucket that does not exist says so and how to create it."""
    env = {**s3_server.env(), "FACTORY_CATALOG": str(tmp_path / "catalog.db")}
    res = _cli("store", "put", str(a_file), "--home", "s3://no-such-bucket/x", env=env)
    _one_line_naming(res, "s3://no-such-bucket/x", "bucket 'no-such-bucket' does not exist")


def test_an_s3_home_works_through_the_cli(a_file, tmp_path, s3_server):
    """With FACTORY_S3_ENDPOINT and the AWS variables set, put, get and dataset add work on an s3:// home."""
    env = {**s3_server.env(), "FACTORY_CATALOG": str(tmp_path / "catalog.db"),
           "FACTORY_HOME": "s3://factory-tests/cli-home"}
    put = _cli("store", "put", str(a_file), env=env)
    assert put.returncode == 0, put.stderr
    digest = put.stdout.strip()
    got = _cli("store", "get", digest, "-o", str(tmp_path / "copy.csv"), env=env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "copy.csv").read_bytes() == a_file.read_bytes()
    added = _cli("dataset", "add", str(a_file), "--name", "d", env=env)
    assert added.returncode == 0, added.stderr
    assert "d" in _cli("dataset", "list", env=env).stdout


def test_the_api_raises_the_same_error_and_it_pickles(tmp_path):
    """Store() refuses a bad home before writing anything; the error crosses Ray's process boundary intact."""
    with pytest.raises(StoreHomeError, match="unknown scheme") as info:
        Store("bogus://x", settings=Settings())
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, UserError) and err.home == "bogus://x" and str(err) == str(info.value)
    with pytest.raises(StoreHomeError, match="names no bucket"):
        Store("s3:///x", settings=Settings(catalog=str(tmp_path / "c.db")))


def test_settings_read_the_endpoint_and_the_standard_aws_variables():
    """FACTORY_S3_ENDPOINT wins over AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL; keys and region come from AWS_*."""
    env = {"AWS_ENDPOINT_URL": "http://general:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2",
           "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "hush", "AWS_SESSION_TOKEN": "tok",
           "AWS_DEFAULT_REGION": "eu-west-1"}
    s = Settings.from_env(env)
    assert (s.s3_endpoint, s.s3_region, s.s3_access_key, s.s3_secret_key) == ("http://s3only:2", "eu-west-1", "AKIA", "hush")
    assert "hush" not in repr(s) and "tok" not in repr(s)
    assert Settings.from_env({**env, "FACTORY_S3_ENDPOINT": "http://mine:3"}).s3_endpoint == "http://mine:3"
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://general:1"}).s3_endpoint == "http://general:1"
    with pytest.raises(UserError, match="FACTORY_S3_CONNECT_TIMEOUT"):
        Settings.from_env({"FACTORY_S3_CONNECT_TIMEOUT": "soon"})


def test_one_place_turns_settings_into_arrow_boto3_and_lance_options():
    """The same endpoint, region and keys reach pyarrow, boto3 and Lance; plain http is allowed only when asked for."""
    s = Settings(s3_endpoint="http://minio:9000", s3_access_key="k", s3_secret_key="s", s3_connect_timeout_s=2)
    arrow = _fs.s3_filesystem_arguments(s)
    assert (arrow["scheme"], arrow["endpoint_override"], arrow["region"]) == ("http", "minio:9000", "us-east-1")
    assert (arrow["access_key"], arrow["secret_key"], arrow["connect_timeout"]) == ("k", "s", 2)
    client = _fs.s3_client_arguments(s)
    assert (client["endpoint_url"], client["aws_access_key_id"]) == ("http://minio:9000", "k")
    lance = _fs.lance_options("s3://b/home", s)
    assert lance["aws_endpoint"] == "http://minio:9000" and lance["allow_http"] == "true"
    assert (lance["aws_access_key_id"], lance["aws_secret_access_key"], lance["aws_region"]) == ("k", "s", "us-east-1")
    secure = _fs.lance_options("s3://b/home", Settings(s3_endpoint="https://s3.example.com"))
    assert "allow_http" not in secure and "aws_access_key_id" not in secure
    aws = _fs.s3_filesystem_arguments(Settings())
    assert "endpoint_override" not in aws and "access_key" not in aws  # left to the SDK's own chain
    assert _fs.lance_options("/local/home", s) is None
    with pytest.raises(StoreHomeError, match="not an http"):
        _fs.s3_filesystem_arguments(Settings(s3_endpoint="ftp://x"))
