"""``factory contract``: package an example, validate it (good and broken), show and export it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from factory.errors import NotFoundError, UserError
from factory.runtime._cli_contract import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path):
    return str(tmp_path / "home")


def invoke(*args):
    return runner.invoke(app, list(args))


def example(home: str, *extra: str) -> str:
    result = invoke("package-example", "--home", home, *extra)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_package_example_then_validate_passes(home):
    """A packaged example validates with exit 0 and a table of passed checks ending in 'ok'."""
    digest = example(home)
    assert digest.startswith("sha256:")
    result = invoke("validate", digest[:20], "--home", home, "--runs", "3")
    assert result.exit_code == 0, result.output
    assert "forward pass, batch 64" in result.output
    assert "ok: example-mlp satisfies its contract" in result.output


def test_validate_json_is_the_signable_result(home):
    """--json prints the whole result: ok, digests, checks, latency."""
    digest = example(home, "--arch", "mlp-regressor", "--out-features", "1", "--max-batch", "8")
    result = invoke("validate", digest, "--home", home, "--json", "--runs", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["package_digest"] == digest
    assert [s["batch_size"] for s in data["latency"]] == [1, 8]


def test_a_broken_exported_package_fails_with_the_violation_named(home, tmp_path):
    """Export, break the contract's output shape, validate the folder: exit 1 and the field in the table."""
    digest = example(home)
    out = tmp_path / "pkg"
    assert invoke("export", digest, "-o", str(out), "--home", home).exit_code == 0
    (out / "manifest.json").unlink()
    contract = json.loads((out / "contract.json").read_text())
    contract["outputs"][0]["shape"] = [-1, 4]
    (out / "contract.json").write_text(json.dumps(contract))
    result = invoke("validate", str(out), "--runs", "3")
    assert result.exit_code == 1
    assert "outputs[probabilities].shape" in result.output
    assert "FAILED: 1 violation(s)" in result.output


def test_show_gives_the_contract_and_oip_metadata(home):
    """show --json returns the contract, its OIP metadata and the architecture reference."""
    digest = example(home)
    data = json.loads(invoke("show", digest, "--home", home, "--json").output)
    assert data["oip_metadata"]["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert data["architecture"]["name"] == "mlp-classifier"
    table = invoke("show", digest, "--home", home)
    assert table.exit_code == 0 and "probabilities" in table.output


def test_architectures_lists_the_builtins():
    """architectures --json lists both built-in MLPs with their code digests."""
    data = json.loads(invoke("architectures", "--json").output)
    assert {"mlp-classifier", "mlp-regressor"} <= {a["name"] for a in data}


def test_bad_input_is_a_user_error(home):
    """An unknown digest or architecture surfaces as a user error (the root CLI prints it and exits 2)."""
    invoke("package-example", "--home", home)
    result = invoke("validate", "sha256:" + "0" * 64, "--home", home)
    assert isinstance(result.exception, NotFoundError)
    result = invoke("package-example", "--arch", "resnet", "--home", home)
    assert isinstance(result.exception, UserError)
    assert "mlp-classifier" in str(result.exception)


def test_exit_codes_through_the_factory_command(home, tmp_path, capsys):
    """Through the real entry point: 0 for a good package, 1 for violations, 2 for a digest that is not there."""
    from factory.runtime.cli import main

    digest = example(home)
    with pytest.raises(SystemExit) as good:
        main(["contract", "validate", digest, "--home", home, "--runs", "3"])
    with pytest.raises(SystemExit) as missing:
        main(["contract", "validate", "sha256:" + "0" * 64, "--home", home])
    out = tmp_path / "pkg"
    invoke("export", digest, "-o", str(out), "--home", home)
    (out / "metrics.json").write_text('{"accuracy": 1.0}')
    with pytest.raises(SystemExit) as broken:
        main(["contract", "validate", str(out)])
    assert (good.value.code, broken.value.code, missing.value.code) == (0, 1, 2)
    assert "error: no artifact" in capsys.readouterr().err
