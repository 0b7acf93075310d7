"""Sharded model packages: Hugging Face layout, packed and loaded a file at a time, verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from factory.contract import Contract, default_registry, export, load, package, validate
from factory.errors import ContractViolationError, CorruptBlobError

CONFIG = {"in_features": 16, "out_features": 3, "hidden": [64, 64]}
X = np.random.default_rng(0).standard_normal((5, 16)).astype("float32")


def mlp(config=CONFIG, seed=0):
    return default_registry().build("mlp-classifier", config, seed=seed).eval()


def contract_for(config=CONFIG) -> Contract:
    sig = default_registry().get("mlp-classifier").expected(config)
    return Contract(name="wide", inputs=sig.inputs, outputs=sig.outputs)


def files_of(store, digest) -> dict[str, str]:
    return store.artifacts.get(digest).metadata["files"]


@pytest.fixture
def sharded(store):
    """A package whose ~22 KiB of weights are split into shards of at most 8 KiB."""
    model = mlp()
    return model, package(store, model, contract_for(), max_shard_bytes=8 << 10)


def test_large_weights_are_written_as_hugging_face_shards_with_an_index(store, sharded):
    """The package holds model-0000k-of-0000N.safetensors and an index mapping every tensor to its shard."""
    model, pkg = sharded
    files = files_of(store, pkg.digest)
    shards = sorted(n for n in files if n.startswith("model-"))
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert len(shards) >= 3 and "model.safetensors" not in files
    index = json.loads(store.blobs.get(files["model.safetensors.index.json"]))
    state = model.state_dict()
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())


def test_a_sharded_package_loads_and_answers_like_the_model(store, sharded):
    """Loading the shards back gives a module with the same outputs as the one packaged."""
    model, pkg = sharded
    loaded = load(store, pkg.digest)
    expected = model(torch.from_numpy(X))
    got = loaded.predict({"features": X})
    assert torch.equal(got["probabilities"], expected["probabilities"])
    assert not any(p.is_meta for p in loaded.module.parameters())
    assert validate(pkg.digest, store=store, runs=3).ok


def test_exported_shards_are_plain_safetensors_files(store, sharded, tmp_path):
    """Every exported shard opens with safetensors.torch.load_file; the folder loads with the same digest."""
    model, pkg = sharded
    out = export(store, pkg.digest, tmp_path / "pkg")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    state = model.state_dict()
    for name, shard in index["weight_map"].items():
        assert torch.equal(load_file(out / shard)[name], state[name])
    assert load(None, out).digest == pkg.digest


def test_sharding_is_deterministic(store, tmp_path):
    """The same weights packed twice, in two stores, give the same shards and the same digest."""
    from factory.settings import Settings
    from factory.store import Store

    other = Store(tmp_path / "other", settings=Settings(home=str(tmp_path / "other")))
    first = package(store, mlp(), contract_for(), max_shard_bytes=8 << 10)
    second = package(other, mlp(), contract_for(), max_shard_bytes=8 << 10)
    assert first.digest == second.digest


def test_small_weights_keep_the_single_file_layout(store):
    """Below the shard size a package is one model.safetensors, exactly as before sharding existed."""
    pkg = package(store, mlp(), contract_for())
    assert "model.safetensors" in files_of(store, pkg.digest)
    assert not any(n.startswith("model-") for n in files_of(store, pkg.digest))


def test_a_tampered_shard_is_never_loaded(store, sharded):
    """A flipped byte in one shard fails the load as corrupt; validation reports it as such."""
    _, pkg = sharded
    shard = files_of(store, pkg.digest)["model-00002-of-00003.safetensors"]
    path = store.blobs.path(shard)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CorruptBlobError, match=shard):
        load(store, pkg.digest)
    assert [v.field for v in validate(pkg.digest, store=store, runs=3).violations] == ["package.blobs"]


def test_a_missing_shard_or_a_lying_index_is_named(store, sharded, tmp_path):
    """A folder missing a shard, or whose index maps a tensor to the wrong shard, is refused with the reason."""
    _, pkg = sharded
    out = export(store, pkg.digest, tmp_path / "pkg")
    (out / "manifest.json").unlink()
    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "model-00003-of-00003.safetensors" if index["weight_map"][name] != \
        "model-00003-of-00003.safetensors" else "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ContractViolationError, match="weight_map disagrees"):
        load(None, out)
    (out / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ContractViolationError, match="incomplete set of shards"):
        load(None, out)


def test_a_stray_shard_name_or_both_layouts_are_refused(store, sharded, tmp_path):
    """A file named like a shard but not in the series, or a single file beside shards, is refused."""
    _, pkg = sharded
    out = export(store, pkg.digest, tmp_path / "pkg")
    (out / "manifest.json").unlink()
    (out / "model-extra.safetensors").write_bytes(b"x")
    with pytest.raises(ContractViolationError, match="named like shards"):
        load(None, out)
    (out / "model-extra.safetensors").unlink()
    (out / "model.safetensors").write_bytes((out / "model-00001-of-00003.safetensors").read_bytes())
    with pytest.raises(ContractViolationError, match="both model.safetensors and sharded weights"):
        load(None, out)


def test_a_sharded_package_loads_in_about_its_weights_of_memory(tmp_path):
    """Loading about 128 MiB of shards raises the process's peak memory by less than 1.5x the weights."""
    home = str(tmp_path / "home")
    config = {"in_features": 2048, "out_features": 2, "hidden": [4096, 4096, 2048]}
    pack = textwrap.dedent(f"""
        from factory.contract import Contract, default_registry, package
        from factory.settings import Settings
        from factory.store import Store
        store = Store({home!r}, settings=Settings(home={home!r}))
        sig = default_registry().get("mlp-classifier").expected({config!r})
        model = default_registry().build("mlp-classifier", {config!r}, seed=0)
        print(package(store, model, Contract(name="big", inputs=sig.inputs, outputs=sig.outputs),
                      max_shard_bytes=32 << 20).digest)
    """)
    check = textwrap.dedent(f"""
        import re, sys
        import torch
        from factory.contract import load
        from factory.settings import Settings
        from factory.store import Store

        def status(field):
            return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) << 10

        store = Store({home!r}, settings=Settings(home={home!r}))
        store.artifacts
        before = status("VmRSS")
        model = load(store, sys.argv[1])
        weights = sum(p.numel() * p.element_size() for p in model.module.state_dict().values())
        print(weights, status("VmHWM") - before)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    packed = subprocess.run([sys.executable, "-c", pack], capture_output=True, text=True, env=env, timeout=300)
    assert packed.returncode == 0, packed.stderr
    res = subprocess.run([sys.executable, "-c", check, packed.stdout.strip()], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    weights, grew = map(int, res.stdout.split())
    assert weights > 100 << 20
    assert grew < 1.5 * weights, f"peak grew by {grew / weights:.2f}x the weights"


def test_tied_weights_in_different_shards_are_refused(store):
    """Two names sharing one tensor would come back as two tensors: refused across shards as for one file."""
    from factory.contract.packages import _write_weights

    shared = torch.ones(1024)
    with pytest.raises(ContractViolationError, match="share memory"):
        _write_weights(store, {"a": shared, "b": shared}, max_shard_bytes=4096)
    assert list(store.blobs.digests()) == []


def test_a_fifo_in_place_of_a_shard_is_refused_without_waiting(store, sharded, tmp_path):
    """A FIFO named like a weights file is refused at once, not read (which would block forever)."""
    import threading

    _, pkg = sharded
    out = export(store, pkg.digest, tmp_path / "pkg")
    (out / "manifest.json").unlink()
    (out / "model-00002-of-00003.safetensors").unlink()
    os.mkfifo(out / "model-00002-of-00003.safetensors")
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(pytest.raises(ContractViolationError, load, None, out)))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "load blocked on a FIFO"
    assert "not a regular file" in str(outcome[0].value)
