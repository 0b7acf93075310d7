"""Hostile and damaged packages: refused before anything runs, each with an error naming the problem."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct

import pytest
import torch

from factory.contract import Contract, default_registry, export, load, package, validate
from factory.contract._files import manifest_bytes
from factory.errors import ContractViolationError, CorruptBlobError, UnsafePackageError

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}


class _CreatesFile:
    """Unpickling this opens (creates) ``path``: the stand-in for arbitrary code in a pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def hostile_pickle(path, protocol=4) -> bytes:
    return pickle.dumps(_CreatesFile(path), protocol=protocol)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Any call to pickle or torch.load during a test fails it: loading must never reach them."""
    def refuse(*args, **kwargs):
        raise AssertionError("pickle or torch.load was called")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture
def good(store):
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    contract = Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs)
    return package(store, default_registry().build("mlp-classifier", CONFIG, seed=0), contract)


@pytest.fixture
def folder(store, good, tmp_path):
    out = export(store, good.digest, tmp_path / "pkg")
    (out / "manifest.json").unlink()
    return out


def test_the_hostile_pickle_is_live(tmp_path, monkeypatch):
    """Sanity: the payload used below really creates its file when unpickled (so its absence means something)."""
    monkeypatch.undo()
    marker = tmp_path / "proof"
    pickle.loads(hostile_pickle(marker)).close()
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.pkl", "weights.pt", "pytorch_model.bin", "ckpt.pth"])
def test_a_pickle_file_in_a_folder_is_refused_and_never_runs(folder, tmp_path, name):
    """A package folder holding a pickle-type file is refused by name; the pickle's file is never created."""
    marker = tmp_path / "pwned"
    (folder / name).write_bytes(hostile_pickle(marker))
    with pytest.raises(UnsafePackageError, match=name):
        load(None, folder)
    result = validate(folder)
    assert not result.ok and result.violations[0].field == "package.files"
    assert name in result.violations[0].message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("file", "make", "found"),
    [
        ("model.safetensors", lambda p: hostile_pickle(p), "a pickle \\(protocol 4\\)"),
        ("model.safetensors", lambda p: hostile_pickle(p, protocol=2), "a pickle \\(protocol 2\\)"),
        ("contract.json", lambda p: hostile_pickle(p, protocol=0), "a pickle \\(protocol 0\\)"),
        ("model.safetensors", None, "a zip archive"),
    ],
    ids=["pickle-as-weights", "protocol-2", "protocol-0-as-contract", "torch-zip-as-weights"],
)
def test_pickle_content_under_a_safe_name_is_refused(folder, tmp_path, monkeypatch, file, make, found):
    """A pickle or torch checkpoint renamed to a package file is recognised by its bytes and refused."""
    marker = tmp_path / "pwned"
    if make is None:
        buf = io.BytesIO()
        with monkeypatch.context() as m:
            m.undo()
            torch.save({"w": torch.ones(2)}, buf)
        data = buf.getvalue()
    else:
        data = make(marker)
    (folder / file).write_bytes(data)
    with pytest.raises(UnsafePackageError, match=f"{file} .* is {found}"):
        load(None, folder)
    assert not marker.exists()


def test_a_stored_package_listing_a_pickle_is_refused_before_reading_it(store, good, tmp_path):
    """A store manifest naming a .bin file is refused from the manifest alone: that blob is never fetched."""
    marker = tmp_path / "pwned"
    evil = store.blobs.put_bytes(hostile_pickle(marker))
    files = {**store.artifacts.get(good.digest).metadata["files"], "pytorch_model.bin": evil}
    digest = store.blobs.put_bytes(manifest_bytes(files))
    store.artifacts.add("model", digest=digest, name="evil")
    fetched = []
    real_get = store.blobs.get
    store.blobs.get = lambda d: fetched.append(d) or real_get(d)
    with pytest.raises(UnsafePackageError, match="pytorch_model.bin"):
        load(store, digest)
    assert digest in fetched and evil not in fetched  # the manifest was read, the pickle never
    assert not marker.exists()


def test_a_link_out_of_the_package_folder_is_refused(folder, tmp_path):
    """A file that is a symlink to somewhere outside the package is refused, naming the link."""
    outside = tmp_path / "secret.md"
    outside.write_text("---\na: 1\n---\n")
    (folder / "README.md").unlink()
    os.symlink(outside, folder / "README.md")
    with pytest.raises(UnsafePackageError, match="README.md .* outside the package"):
        load(None, folder)


def test_a_tampered_blob_is_never_loaded(store, good):
    """Changing one byte of the stored weights makes loading fail as corrupt, and validation report it."""
    weights = store.artifacts.get(good.digest).metadata["files"]["model.safetensors"]
    path = store.blobs.path(weights)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CorruptBlobError, match=weights):
        load(store, good.digest)
    result = validate(good.digest, store=store)
    assert [v.field for v in result.violations] == ["package.blobs"]


def _header(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write(folder, header: dict, body: bytes) -> None:
    text = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + body)


def test_truncated_weights(folder):
    """Weights cut short: a clear error that says truncated."""
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ContractViolationError, match="model.safetensors: .*truncated"):
        load(None, folder)


def test_oversized_header(folder):
    """A header length of 1 TiB is refused from the first 8 bytes, without reading or allocating it."""
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    with pytest.raises(ContractViolationError, match="header of 1099511627776 bytes exceeds the cap"):
        load(None, folder)


def test_wrong_dtype(folder):
    """A tensor relabelled I32 (same size as F32) loads no further than the check naming it and both dtypes."""
    header, body = _header((folder / "model.safetensors").read_bytes())
    header["layers.0.weight"]["dtype"] = "I32"
    _write(folder, header, body)
    with pytest.raises(ContractViolationError, match=r"weights\[layers.0.weight\].dtype: expected F32, got I32"):
        load(None, folder)


def test_missing_tensor(folder):
    """Weights without a tensor the architecture needs: the error names the tensor."""
    header, body = _header((folder / "model.safetensors").read_bytes())
    meta = header.pop("__metadata__", None)
    begin, end = header.pop("layers.2.bias")["data_offsets"]
    for entry in header.values():
        if entry["data_offsets"][0] >= end:
            entry["data_offsets"] = [o - (end - begin) for o in entry["data_offsets"]]
    if meta:
        header["__metadata__"] = meta
    _write(folder, header, body[:begin] + body[end:])
    with pytest.raises(ContractViolationError, match=r"weights\[layers.2.bias\]: expected F32 \[3\], got missing"):
        load(None, folder)


def test_contract_shapes_disagreeing_with_the_weights(folder):
    """A contract taking 5 features for weights built for 4 cannot be loaded; the error says both."""
    data = json.loads((folder / "contract.json").read_text())
    data["inputs"][0]["shape"] = [-1, 5]
    (folder / "contract.json").write_text(json.dumps(data))
    with pytest.raises(ContractViolationError, match=r"inputs: expected 4 values per row, got 5 \(features \[-1, 5\]"):
        load(None, folder)
