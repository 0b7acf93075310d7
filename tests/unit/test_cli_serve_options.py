"""``factory serve``: options refused before any cluster is touched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from factory.errors import UserError
from factory.runtime._cli_serve import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "words"), [
    (["--autoscale", "3"], "--autoscale '3' is not MIN,MAX"),
    (["--autoscale", "4,2"], "needs 0 <= MIN <= MAX"),
    (["--replicas", "2", "--autoscale", "1,2"], "give --replicas or --autoscale, not both"),
])
def test_bad_scaling_options_are_one_line_user_errors(tmp_path, args, words):
    """Scaling options that cannot work are refused with what to type instead, before Ray starts."""
    result = runner.invoke(app, ["deploy", "sha256:" + "a" * 64, "--env", "dev", "--home", str(tmp_path), *args])
    assert isinstance(result.exception, UserError) and words in str(result.exception)


def test_help_says_which_cluster_deploy_uses():
    """deploy --help tells the user it connects to a running cluster or starts an embedded one."""
    result = runner.invoke(app, ["deploy", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "running Ray cluster" in text and "embedded" in text


def test_a_package_its_environment_does_not_admit_is_refused_before_any_cluster(store, monkeypatch):
    """deploy --env prod of a package with no attestations names what prod lacks; Ray is never started."""
    import ray

    from factory.contract import Contract, Resources, default_registry, package
    from factory.errors import NotAdmittedError

    config = {"in_features": 4, "out_features": 3, "hidden": [8]}
    signature = default_registry().get("mlp-classifier").expected(config)
    contract = Contract(name="iris", inputs=signature.inputs, outputs=signature.outputs,
                        resources=Resources(cpus=0.1, memory_mb=256))
    pkg = package(store, default_registry().build("mlp-classifier", config, seed=0).eval(), contract)
    monkeypatch.setenv("FACTORY_CATALOG", store.settings.catalog)
    result = runner.invoke(app, ["deploy", pkg.digest, "--env", "prod", "--home", str(store.home)])
    assert isinstance(result.exception, NotAdmittedError), result.output
    message = str(result.exception)
    assert "not admitted to prod" in message and "security" in message and "factory gates run" in message
    assert not ray.is_initialized() and store.refs.get("model/iris/prod") is None
