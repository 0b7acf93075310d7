"""Model packages: write, load, digest identity, lineage, and files readable by plain tools."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from factory.contract import (
    Architecture,
    ArchitectureRegistry,
    Contract,
    ModelPackageMeta,
    Provenance,
    Resources,
    default_registry,
    export,
    load,
    package,
)
from factory.contract._card import parse_card
from factory.errors import ContractViolationError, InvalidInputError
from factory.store import ArtifactKind

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}


def mlp(seed: int = 0, config=CONFIG):
    return default_registry().build("mlp-classifier", config, seed=seed)


def contract_for(config=CONFIG, **overrides) -> Contract:
    sig = default_registry().get("mlp-classifier").expected(config)
    return Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs, **overrides)


X = np.random.default_rng(0).standard_normal((7, 4)).astype("float32")


def test_round_trip_gives_the_same_outputs(store):
    """A packaged then loaded model answers the same inputs with the same outputs."""
    model = mlp().eval()
    pkg = package(store, model, contract_for(), metrics={"accuracy": 0.5})
    loaded = load(store, pkg.digest)
    expected = model(torch.from_numpy(X))
    got = loaded.predict({"features": X})
    assert torch.equal(got["probabilities"], expected["probabilities"])
    assert torch.equal(got["label"], expected["label"])
    assert loaded.metrics == {"accuracy": 0.5}
    assert not loaded.module.training


def test_digest_is_stable_across_packagings_and_stores(store, tmp_path):
    """The same weights and contract give the same digest, in another store and in another process."""
    from factory.settings import Settings
    from factory.store import Store

    first = package(store, mlp(), contract_for()).digest
    assert package(store, mlp(), contract_for()).digest == first
    other = Store(tmp_path / "other", settings=Settings(home=str(tmp_path / "other")))
    assert package(other, mlp(), contract_for()).digest == first
    code = (
        "import sys\nfrom factory.store import Store\nfrom factory.settings import Settings\n"
        "from factory.contract import Contract, default_registry, package\n"
        f"cfg = {CONFIG!r}\narch = default_registry().get('mlp-classifier')\nsig = arch.expected(cfg)\n"
        "c = Contract(name='iris', inputs=sig.inputs, outputs=sig.outputs)\n"
        "s = Store(sys.argv[1], settings=Settings(home=sys.argv[1]))\n"
        "print(package(s, arch.build(cfg, seed=0), c).digest)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "third")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == first


def test_any_changed_weight_changes_the_digest(store):
    """One weight nudged is another package."""
    model = mlp()
    first = package(store, model, contract_for()).digest
    with torch.no_grad():
        model.layers[0].weight[0, 0] += 1e-6
    assert package(store, model, contract_for()).digest != first


def test_model_artifact_records_training_inputs_as_parents(store):
    """The model artifact's parents are the provenance digests the store knows, and its metadata is typed."""
    dataset = store.artifacts.add("dataset", metadata={"rows": 150}, name="iris").digest
    config = store.artifacts.add("training-config", metadata={"lr": 0.1}, name="iris-train").digest
    unknown = "sha256:" + "cd" * 32  # e.g. an environment digest never recorded as an artifact
    contract = contract_for(provenance=Provenance(dataset=dataset, training_config=config, environment=unknown))
    pkg = package(store, mlp(), contract, metrics={"accuracy": 0.97})
    artifact = store.artifacts.get(pkg.digest)
    assert artifact.kind == ArtifactKind.MODEL
    assert set(artifact.parents) == {dataset, config}
    meta = artifact.meta(ModelPackageMeta)
    assert meta.contract_digest == contract.digest
    assert meta.architecture == "mlp-classifier@1"
    assert meta.provenance.environment == unknown
    assert pkg.digest in store.lineage.children(dataset)


def test_exported_files_are_plain_safetensors_and_a_hugging_face_card(store, tmp_path):
    """Exported weights load with plain safetensors; the card's front matter is YAML with the HF fields."""
    model = mlp()
    pkg = package(store, model, contract_for(), metrics={"accuracy": 0.9, "f1": 0.8}, license="apache-2.0")
    folder = export(store, pkg.digest, tmp_path / "out")
    tensors = load_file(folder / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    assert all(tensors[k].equal(v) for k, v in model.state_dict().items())
    text = (folder / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front == parse_card(text)
    assert front["library_name"] == "factory"
    assert front["license"] == "apache-2.0"
    assert front["pipeline_tag"] == "tabular-classification"
    result = front["model-index"][0]["results"][0]
    assert front["model-index"][0]["name"] == "iris"
    assert result["task"]["type"] == "tabular-classification"
    assert {(m["type"], m["value"]) for m in result["metrics"]} == {("accuracy", 0.9), ("f1", 0.8)}
    assert json.loads((folder / "contract.json").read_bytes()) == json.loads(contract_for().to_json())


def test_a_package_folder_has_the_same_digest_and_loads(store, tmp_path):
    """An exported folder is the same package: same digest, same outputs."""
    pkg = package(store, mlp(), contract_for())
    folder = export(store, pkg.digest, tmp_path / "out")
    loaded = load(None, folder)
    assert loaded.digest == pkg.digest
    from_store = load(store, pkg.digest).predict({"features": X})
    assert torch.equal(loaded.predict({"features": X})["label"], from_store["label"])


def test_a_folder_changed_after_export_is_caught(store, tmp_path):
    """Editing a file of an exported folder no longer matches its manifest.json."""
    folder = export(store, package(store, mlp(), contract_for()).digest, tmp_path / "out")
    (folder / "metrics.json").write_text('{"accuracy": 1.0}')
    with pytest.raises(ContractViolationError, match=r"\['metrics.json'\] no longer match manifest.json"):
        load(None, folder)


def test_package_refuses_a_module_that_does_not_fit_its_architecture(store):
    """A module whose tensors differ from what its architecture builds is refused, naming the tensor."""
    model = mlp()
    model._factory_architecture = default_registry().get("mlp-classifier").ref({**CONFIG, "hidden": [9]})
    with pytest.raises(ContractViolationError, match=r"weights\[layers.0.weight\].shape"):
        package(store, model, contract_for())
    with pytest.raises(InvalidInputError, match="cannot tell which architecture"):
        package(store, torch.nn.Linear(4, 3), contract_for())


def test_load_refuses_changed_architecture_code_unless_allowed(store):
    """Weights packaged with one version of the code do not load with other code unless the caller accepts it."""
    pkg = package(store, mlp(), contract_for())
    builtin = default_registry().get("mlp-classifier")
    changed = ArchitectureRegistry([Architecture("mlp-classifier", "1", _other_builder, signature=builtin.signature)])
    with pytest.raises(ContractViolationError, match="architecture.code_digest"):
        load(store, pkg.digest, registry=changed)
    loaded = load(store, pkg.digest, registry=changed, allow_code_mismatch=True)
    assert loaded.predict({"features": X})["label"].shape == (7,)


def _other_builder(config):
    from factory.contract._mlp import build_classifier

    return build_classifier(config)


def test_load_refuses_a_contract_that_disagrees_with_the_weights(store):
    """A contract promising 4 classes for weights that give 3 cannot be loaded; the error names the output."""
    bad = contract_for(config={**CONFIG, "out_features": 4})
    pkg = package(store, mlp(), bad)
    with pytest.raises(ContractViolationError, match=r"outputs\[probabilities\].shape: expected \[-1, 3\]"):
        load(store, pkg.digest)


def test_predict_checks_inputs_against_the_contract(store):
    """Inputs of the wrong width or name are refused before the model runs."""
    loaded = load(store, package(store, mlp(), contract_for(resources=Resources(max_batch_size=8))).digest)
    with pytest.raises(ContractViolationError, match=r"input 'features' has shape \[7, 5\]"):
        loaded.predict({"features": np.zeros((7, 5), dtype="float32")})
    with pytest.raises(ContractViolationError, match="missing"):
        loaded.predict({"x": X})
