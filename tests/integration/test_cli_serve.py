"""``factory serve``: deploy from the CLI, answer the printed curl, list, delete."""

from __future__ import annotations

import json
import shlex
import subprocess

import httpx
from typer.testing import CliRunner

from factory.runtime._cli_serve import app

runner = CliRunner()


def test_deploy_list_and_delete_from_the_cli(store, mlp_package, serve_url):
    """deploy prints a URL and a curl that answers; list shows the model; delete takes it away."""
    pkg = mlp_package()
    home = store.home
    result = runner.invoke(app, ["deploy", pkg.digest[:19], "--env", "dev", "--name", "iris-dev", "--home", home])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    url = next(line.split(": ", 1)[1] for line in lines if line.startswith("endpoint: "))
    assert url == f"{serve_url}/v2/models/iris-dev"
    curl = next(line for line in lines if line.startswith("curl "))
    answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=60, check=True)
    assert '"model_name":"iris-dev"' in answer.stdout
    assert store.refs.get("model/iris/dev") == pkg.digest

    listed = runner.invoke(app, ["list", "--home", home, "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.output) if r["name"] == "iris-dev"]
    assert (row["model"], row["env"], row["status"], row["replicas"]) == ("iris", "dev", "RUNNING", 1)
    assert row["versions"] == [pkg.digest[7:19]] and row["url"] == url
    table = runner.invoke(app, ["list", "--home", home])
    assert "iris-dev (iris)" in table.output and f"{pkg.digest[7:19]}*" in table.output

    deleted = runner.invoke(app, ["delete", "iris-dev", "--home", home])
    assert deleted.exit_code == 0, deleted.output
    assert httpx.get(url, timeout=30).status_code == 404
    assert runner.invoke(app, ["list", "--home", home, "--json"]).output.strip() == "[]"
    assert store.refs.get("model/iris/dev") == pkg.digest  # the environment's ref stays
