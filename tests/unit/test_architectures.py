"""The architecture registry: built-in MLPs, code digests, and plugins from entry points."""

from __future__ import annotations

import hashlib
import importlib.metadata
import textwrap

import pytest
import torch

from factory.contract import ENTRY_POINT_GROUP, Architecture, ArchitectureRegistry, _mlp
from factory.errors import InvalidInputError, NotFoundError

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}


def test_builtins_are_registered():
    """A registry lists the MLP classifier and regressor, each with a task and a version."""
    registry = ArchitectureRegistry.with_builtins(entry_points=False)
    assert {"mlp-classifier", "mlp-regressor"} <= set(registry.names())
    assert registry.get("mlp-classifier").task == "tabular-classification"


def test_code_digest_is_the_hash_of_the_builder_source():
    """The code digest is the SHA-256 of the file defining the builder, so editing it changes the digest."""
    arch = ArchitectureRegistry.with_builtins(entry_points=False).get("mlp-regressor")
    with open(_mlp.__file__, "rb") as f:
        assert arch.code_digest == "sha256:" + hashlib.sha256(f.read()).hexdigest()


def test_seeded_builds_are_reproducible():
    """The same seed gives the same initial weights, another seed different ones, and global RNG is untouched."""
    arch = ArchitectureRegistry.with_builtins(entry_points=False).get("mlp-classifier")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = arch.build(CONFIG, seed=1)
    b = arch.build(CONFIG, seed=1)
    c = arch.build(CONFIG, seed=2)
    assert torch.rand(1).equal(before)
    for name, tensor in a.state_dict().items():
        assert tensor.equal(b.state_dict()[name])
    assert not a.state_dict()["layers.0.weight"].equal(c.state_dict()["layers.0.weight"])


def test_classifier_and_regressor_outputs():
    """The classifier returns probabilities summing to one and a label; the regressor one value per target."""
    registry = ArchitectureRegistry.with_builtins(entry_points=False)
    x = torch.randn(5, 4)
    out = registry.build("mlp-classifier", CONFIG, seed=0).eval()(x)
    assert torch.allclose(out["probabilities"].sum(dim=1), torch.ones(5))
    assert out["label"].dtype == torch.int64 and out["label"].shape == (5,)
    # Per-feature inputs are concatenated in order: two [-1, 2] inputs equal one [-1, 4].
    out2 = registry.build("mlp-classifier", CONFIG, seed=0).eval()(x[:, :2], x[:, 2:])
    assert torch.equal(out["label"], out2["label"])
    reg = registry.build("mlp-regressor", {"in_features": 4, "out_features": 2}, seed=0)(x)
    assert reg["prediction"].shape == (5, 2)


def test_build_is_tagged_with_its_reference():
    """A built module carries its architecture reference, config included, so package() needs no more."""
    model = ArchitectureRegistry.with_builtins(entry_points=False).build("mlp-classifier", CONFIG, seed=0)
    ref = model._factory_architecture
    assert (ref.name, ref.version, ref.config) == ("mlp-classifier", "1", CONFIG)


def test_bad_config_and_unknown_names_are_clear_errors():
    """A wrong config names the architecture; an unknown name lists what is installed."""
    registry = ArchitectureRegistry.with_builtins(entry_points=False)
    with pytest.raises(InvalidInputError, match="mlp-classifier@1"):
        registry.build("mlp-classifier", {"in_features": 4}, seed=0)
    with pytest.raises(InvalidInputError, match="out_features >= 2"):
        registry.build("mlp-classifier", {"in_features": 4, "out_features": 1})
    with pytest.raises(NotFoundError, match="mlp-classifier"):
        registry.get("transformer")
    with pytest.raises(NotFoundError, match="version 1, not 2"):
        registry.get("mlp-classifier", "2")
    with pytest.raises(InvalidInputError, match="already registered"):
        registry.register(registry.get("mlp-classifier"))


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """An installed-looking module that defines one architecture, importable by name."""
    source = textwrap.dedent(
        """
        import torch
        from factory.contract import Architecture

        def build(config):
            return torch.nn.Linear(config["n"], 1)

        ARCH = Architecture("toy-linear", "3", build, task="tabular-regression")

        def broken():
            raise RuntimeError("plugin exploded")
        """
    )
    (tmp_path / "toy_factory_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "toy_factory_plugin.py"


def _entry_points(monkeypatch, *pairs):
    eps = [importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in pairs]

    def fake(**params):
        assert params == {"group": ENTRY_POINT_GROUP}
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)


def test_entry_point_plugins_register(plugin_module, monkeypatch):
    """An architecture declared in the factory.architectures group is found, built and digested by its file."""
    _entry_points(monkeypatch, ("toy-linear", "toy_factory_plugin:ARCH"))
    registry = ArchitectureRegistry.with_builtins()
    arch = registry.get("toy-linear")
    assert arch.version == "3"
    assert registry.build("toy-linear", {"n": 3}).in_features == 3
    assert arch.code_digest == "sha256:" + hashlib.sha256(plugin_module.read_bytes()).hexdigest()


def test_a_broken_plugin_does_not_break_the_others(plugin_module, monkeypatch):
    """A plugin that fails to load leaves the built-ins usable; asking for it gives the original problem."""
    _entry_points(monkeypatch, ("exploding", "toy_factory_plugin:broken"),
                  ("shadow", "factory.contract.architectures:builtin_architectures"))
    registry = ArchitectureRegistry.with_builtins()
    assert "mlp-classifier" in registry
    with pytest.raises(NotFoundError, match="plugin exploded"):
        registry.get("exploding")
    # A plugin cannot replace a built-in under the same name.
    assert registry.get("mlp-classifier").builder == "factory.contract._mlp:build_classifier"
    with pytest.raises(NotFoundError, match="already registered"):
        registry.get("shadow")


def test_architecture_names_are_checked():
    """An architecture with an unusable name or no version is refused when declared."""
    with pytest.raises(InvalidInputError, match="not valid"):
        Architecture("Bad Name", "1", "x:y")
    with pytest.raises(InvalidInputError, match="needs a version"):
        Architecture("ok", "", "x:y")
