"""PackageView: a stored package read without building it; weights only on demand; unsafe ones refused."""

from __future__ import annotations

import json

import pytest
import torch

from factory.contract import PackageView, open_package
from factory.contract._files import manifest_bytes
from factory.errors import InvalidInputError, UnsafePackageError

from gates_kit import fair_package


def test_the_view_shows_contract_card_metrics_and_files(store):
    """Everything a gate judges is on the view, read from the store and verified."""
    pkg = fair_package(store, metrics={"accuracy": 0.91})
    view = open_package(store, pkg.digest[:20])
    assert isinstance(view, PackageView)
    assert view.digest == pkg.digest and view.name == "credit" and view.contract == pkg.contract
    assert view.architecture == pkg.architecture and dict(view.metrics) == {"accuracy": 0.91}
    assert view.card.startswith("---\n") and view.card_metadata()["library_name"] == "factory"
    assert set(view.files) == {"README.md", "architecture.json", "contract.json", "metrics.json", "model.safetensors"}


def test_weights_load_only_when_asked(store, monkeypatch):
    """Opening a view streams no weights (only sniffs their first bytes); asking for them gives the real tensors."""
    from factory.contract._weights import Weights

    pkg = fair_package(store)
    weights_digest = json.loads(store.blobs.get(pkg.digest))["files"]["model.safetensors"]
    original_get, original_load = store.blobs.get, Weights.load
    read, loads = [], []
    monkeypatch.setattr(store.blobs, "get", lambda d: (read.append(d), original_get(d))[1])
    monkeypatch.setattr(Weights, "load", lambda self, **kw: (loads.append(self.where), original_load(self, **kw))[1])
    view = open_package(store, pkg.digest)
    assert loads == []
    tensors = view.weights()
    assert len(loads) == 1 and weights_digest not in read  # streamed and verified, never read whole
    assert torch.equal(tensors["layers.0.weight"], view.load().module.state_dict()["layers.0.weight"])
    assert {t.name for t in view.weights_header().tensors} == set(tensors)


def test_a_sharded_package_shows_its_shards_and_loads_its_weights(store):
    """A package written as shards: the view lists them in order, their headers, and every tensor."""
    from factory.contract import load
    from factory.contract._files import INDEX

    pkg = fair_package(store, max_shard_bytes=16)
    view = open_package(store, pkg.digest)
    assert len(view.weight_files) >= 2 and view.weight_files == tuple(sorted(view.weight_files))
    assert INDEX in view.files and "model.safetensors" not in view.files
    state = load(store, pkg.digest).module.state_dict()
    tensors = view.weights()
    assert set(tensors) == set(state) and all(torch.equal(tensors[k], state[k]) for k in state)
    assert {t.name for t in view.weights_header().tensors} == set(state)
    per_file = [t.name for name in view.weight_files for t in view.weights_header(name).tensors]
    assert sorted(per_file) == sorted(state)


def test_a_package_naming_a_pickle_is_refused_unread(store):
    """A model whose manifest lists a pickle is refused by name, before any of its bytes are read."""
    pkg = fair_package(store)
    files = dict(json.loads(store.blobs.get(pkg.digest))["files"])
    files["weights.pkl"] = files.pop("model.safetensors")
    digest = store.blobs.put_bytes(manifest_bytes(files))
    store.artifacts.add("model", digest=digest, name="evil")
    with pytest.raises(UnsafePackageError, match="weights.pkl"):
        open_package(store, digest)


def test_a_digest_that_is_not_a_model_is_refused(store):
    """Giving a blob's digest says it is not a model package."""
    blob = store.put_blob(b"hello", name="hello.txt")
    with pytest.raises(InvalidInputError, match="not a model package"):
        open_package(store, blob.digest)
