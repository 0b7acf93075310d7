"""The validation harness: every violation reported at once, each naming field, expectation and finding."""

from __future__ import annotations

import json

import pytest

from factory.contract import (
    Contract,
    OutputSpec,
    Resources,
    ValidationResult,
    default_registry,
    export,
    package,
    validate,
)
from factory.contract._safetensors import save_tensors
from factory.errors import NotFoundError

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}


def contract(**overrides) -> Contract:
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    fields = dict(name="iris", inputs=sig.inputs, outputs=sig.outputs,
                  resources=Resources(p99_latency_ms=1000, max_batch_size=16))
    fields.update(overrides)
    return Contract(**fields)


def model():
    return default_registry().build("mlp-classifier", CONFIG, seed=0)


@pytest.fixture
def folder(store, tmp_path):
    """A good package exported to a folder without its manifest, free to edit."""
    pkg = package(store, model(), contract(), metrics={"accuracy": 0.5})
    out = export(store, pkg.digest, tmp_path / "pkg")
    (out / "manifest.json").unlink()
    return out


def fields(result: ValidationResult) -> set[str]:
    return {v.field for v in result.violations}


def test_a_good_package_passes_every_check(store):
    """A freshly packaged MLP satisfies its contract: no violations, latency at batch 1 and the maximum."""
    pkg = package(store, model(), contract(), metrics={"accuracy": 0.5})
    result = validate(pkg.digest, store=store, runs=5)
    assert result.ok, result.violations
    assert result.package_digest == pkg.digest
    assert result.contract_digest == contract().digest
    assert result.architecture == "mlp-classifier@1"
    assert all(c.passed for c in result.checks)
    assert [s.batch_size for s in result.latency] == [1, 16]
    assert all(s.runs >= 3 and s.p99_ms >= s.p50_ms for s in result.latency)


def test_the_result_is_canonical_json_a_gate_can_sign(store):
    """The result serialises to canonical JSON that round-trips, with the package and contract digests."""
    pkg = package(store, model(), contract())
    result = validate(pkg.digest, store=store, runs=3)
    data = json.loads(result.to_json())
    assert data["ok"] is True
    assert data["package_digest"] == pkg.digest
    assert data["predicate_type"].startswith("https://")
    assert result.to_json() == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_contract_disagreeing_with_the_weights_names_the_output(store):
    """Promising 4 classes when the weights give 3 is one violation naming the output, the shape expected and found."""
    bad = contract(outputs=(OutputSpec(name="probabilities", dtype="FP32", shape=(-1, 4)),
                            OutputSpec(name="label", dtype="INT64", shape=(-1,))))
    result = validate(package(store, model(), bad).digest, store=store, runs=3)
    assert not result.ok
    [violation] = result.violations
    assert violation.field == "outputs[probabilities].shape"
    assert (violation.expected, violation.actual) == ("[-1, 3]", "[-1, 4]")


def test_every_violation_is_reported_at_once(store):
    """A contract wrong in input width, an output dtype and an undeclared output gets all of them reported."""
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    bad = contract(
        inputs=(sig.inputs[0].model_copy(update={"shape": (-1, 5)}),),
        outputs=(OutputSpec(name="probabilities", dtype="FP64", shape=(-1, 3)),
                 OutputSpec(name="label", dtype="INT64", shape=(-1,)),
                 OutputSpec(name="logits", dtype="FP32", shape=(-1, 3))),
    )
    result = validate(package(store, model(), bad).digest, store=store, runs=3)
    assert {"inputs", "outputs[probabilities].dtype", "outputs[logits]"} <= fields(result)
    inputs = next(v for v in result.violations if v.field == "inputs")
    assert inputs.expected == "4 values per row"


def test_latency_over_the_bound_is_a_violation(store):
    """With a clock where each call takes 10 ms, a 1 ms p99 bound is broken at both batch sizes."""
    ticks = iter(range(0, 10**9, 10))
    pkg = package(store, model(), contract(resources=Resources(p99_latency_ms=1, max_batch_size=4)))
    result = validate(pkg.digest, store=store, runs=5, timer=lambda: next(ticks) / 1000)
    assert fields(result) == {"resources.p99_latency_ms[batch 1]", "resources.p99_latency_ms[batch 4]"}
    assert all(v.expected == "p99 <= 1 ms" for v in result.violations)


def test_a_missing_tensor_is_named(folder):
    """Weights lacking one tensor of the architecture: the violation names that tensor."""
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    del tensors["layers.2.bias"]
    (folder / "model.safetensors").write_bytes(save_tensors(tensors))
    result = validate(folder, runs=3)
    assert fields(result) == {"weights[layers.2.bias]"}
    assert result.violations[0].actual == "missing"
    assert any(c.passed is None for c in result.checks)  # the forward pass is skipped, not run on bad weights


def test_a_wrong_weight_dtype_is_named(folder):
    """A tensor saved as float64 where the architecture holds float32 is a violation naming it."""
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    tensors["layers.0.weight"] = tensors["layers.0.weight"].double()
    (folder / "model.safetensors").write_bytes(save_tensors(tensors))
    result = validate(folder, runs=3)
    assert fields(result) == {"weights[layers.0.weight].dtype"}
    assert (result.violations[0].expected, result.violations[0].actual) == ("F32", "F64")


def test_invalid_contract_and_unknown_architecture_are_reported_together(folder):
    """A bad shape in contract.json and an uninstalled architecture are both reported, by field."""
    data = json.loads((folder / "contract.json").read_text())
    data["inputs"][0]["shape"] = [4]
    (folder / "contract.json").write_text(json.dumps(data))
    arch = json.loads((folder / "architecture.json").read_text())
    arch["name"] = "transformer"
    (folder / "architecture.json").write_text(json.dumps(arch))
    result = validate(folder, runs=3)
    assert {"contract.inputs[0].shape", "architecture.name"} <= fields(result)
    shape = next(v for v in result.violations if v.field == "contract.inputs[0].shape")
    assert "must start with -1" in shape.expected


def test_card_metrics_must_match_metrics_json(folder):
    """A card whose model-index disagrees with metrics.json is a violation."""
    (folder / "metrics.json").write_text('{"accuracy": 0.99}')
    result = validate(folder, runs=3)
    assert fields(result) == {"card.model-index"}


def test_truncated_weights_are_a_violation_not_a_crash(folder):
    """A truncated weights file is reported as malformed safetensors, with the reason."""
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-10])
    result = validate(folder, runs=3)
    assert fields(result) == {"weights"}
    assert "truncated" in result.violations[0].message


def test_bad_input_raises(store):
    """A digest the store does not hold is bad input, not a failed validation."""
    with pytest.raises(NotFoundError):
        validate("sha256:" + "00" * 32, store=store)


def test_a_bad_architecture_config_is_a_violation(folder):
    """architecture.json with a config the architecture cannot take is reported, not a crash."""
    arch = json.loads((folder / "architecture.json").read_text())
    arch["config"]["out_features"] = "three"
    (folder / "architecture.json").write_text(json.dumps(arch))
    result = validate(folder, runs=3)
    assert fields(result) == {"architecture.config"}
    assert "mlp-classifier@1" in result.violations[0].message
