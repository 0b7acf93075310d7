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
    """Opening a view does not read the weights blob; asking for the weights gives the real tensors."""
    pkg = fair_package(store)
    weights_digest = json.loads(store.blobs.get(pkg.digest))["files"]["model.safetensors"]
    original = store.blobs.get
    read = []
    monkeypatch.setattr(store.blobs, "get", lambda d: (read.append(d), original(d))[1])
    view = open_package(store, pkg.digest)
    assert weights_digest not in read
    tensors = view.weights()
    assert weights_digest in read
    assert torch.equal(tensors["layers.0.weight"], view.load().module.state_dict()["layers.0.weight"])
    assert {t.name for t in view.weights_header().tensors} == set(tensors)


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
