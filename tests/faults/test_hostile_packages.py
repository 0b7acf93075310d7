"""Packages built to hang, exhaust or crash the validator: each is a named violation, found in bounded time and memory."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys

import pytest
import torch

from factory.contract import Contract, Resources, default_registry, export, package, validate
from factory.contract._card import parse_card
from factory.contract._safetensors import save_tensors
from factory.errors import ContractViolationError

CONFIG = {"in_features": 4, "out_features": 3, "hidden": [8]}
EXE = os.path.join(os.path.dirname(sys.executable), "factory")
DEEP = 200_000


def _contract(**resources) -> Contract:
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    return Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs,
                    resources=Resources(p99_latency_ms=1000, max_batch_size=16, **resources))


@pytest.fixture
def folder(store, tmp_path):
    """A good package exported to a folder without its manifest, free to edit."""
    pkg = package(store, default_registry().build("mlp-classifier", CONFIG, seed=0), _contract(),
                  metrics={"accuracy": 0.5})
    out = export(store, pkg.digest, tmp_path / "pkg")
    (out / "manifest.json").unlink()
    return out


def _edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _fields(result) -> set[str]:
    return {v.field for v in result.violations}


def _validate_in_a_child(folder, *, limit_gib: float = 4.0, timeout_s: float = 300) -> tuple[int, str, int]:
    """`factory contract validate FOLDER` in a process capped at ``limit_gib`` of address space.

    Returns (exit code, stdout, peak RSS in MiB). A hang fails the test at ``timeout_s``
    instead of stalling the suite; a memory blow-up dies at the cap instead of taking the machine.
    """
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({int(limit_gib * 2**30)}, {int(limit_gib * 2**30)}))\n"
        "from factory.runtime import cli\n"
        "try:\n"
        f"    cli.main(['contract', 'validate', {str(folder)!r}, '--runs', '3', '--json'])\n"
        "finally:\n"
        "    sys.stderr.write(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
    )
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"validating {folder} did not finish within {timeout_s} s")
    peak = [line for line in res.stderr.splitlines() if line.startswith("peak_rss_kib=")]
    assert peak, res.stderr[-2000:]
    return res.returncode, res.stdout, int(peak[-1].split("=")[1]) // 1024


# -- files that are not files ------------------------------------------------------------
def test_a_fifo_named_like_the_weights_is_refused_without_blocking(folder):
    """A FIFO named model.safetensors is refused by its type; validate neither opens nor waits on it."""
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    code, out, _ = _validate_in_a_child(folder, timeout_s=120)
    assert code == 1, out
    result = json.loads(out)
    assert [v["field"] for v in result["violations"]] == ["package.files"]
    assert "model.safetensors" in result["violations"][0]["message"]
    assert "not a regular file" in result["violations"][0]["message"]


def test_an_oversized_contract_is_refused_before_it_is_read(folder):
    """A 'contract.json' of 64 MiB is refused by its size, as a violation naming the file."""
    with open(folder / "contract.json", "r+b") as f:
        f.truncate(64 << 20)
    result = validate(folder, runs=3)
    assert _fields(result) == {"package.files"}
    assert "contract.json" in result.violations[0].message and "bytes" in result.violations[0].message


# -- YAML and JSON built to explode ------------------------------------------------------------
def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def _write_card_front(folder, front: str) -> None:
    (folder / "README.md").write_text(f"---\n{front}\n---\n# iris\n")


def test_a_yaml_alias_bomb_in_the_card_is_refused_from_its_events():
    """A 'billion laughs' card is refused by the parser, before anything is built, walked or printed."""
    with pytest.raises(ContractViolationError, match="expands to more than"):
        parse_card(f"---\n{_alias_bomb(12)}\n---\n")


def test_validating_a_package_with_an_alias_bomb_card_stays_small(folder):
    """The same card in a package is a 'card' violation, found in bounded memory (the old repr took GBs)."""
    _write_card_front(folder, _alias_bomb(10))
    code, out, peak_mib = _validate_in_a_child(folder)
    assert code == 1, out
    assert [v["field"] for v in json.loads(out)["violations"]] == ["card"]
    assert peak_mib < 1024


@pytest.mark.parametrize(
    "file, content",
    [
        ("metrics.json", "[" * DEEP + "]" * DEEP),
        ("contract.json", '{"name": ' + "[" * DEEP + "]" * DEEP + "}"),
        ("architecture.json", '{"config": ' + "{\"a\":" * DEEP + "1" + "}" * DEEP + "}"),
        ("README.md", "---\na: " + "[" * DEEP + "]" * DEEP + "\n---\n"),
    ],
    ids=["metrics", "contract", "architecture", "card"],
)
def test_input_nested_200k_deep_is_a_violation(folder, file, content):
    """JSON or YAML nested 200 k deep is a violation naming the file, not a RecursionError."""
    (folder / file).write_text(content)
    result = validate(folder, runs=3)
    assert not result.ok
    assert any(file.split(".")[0].replace("README", "card") in v.field or file in v.message
               for v in result.violations), result.violations


def test_a_safetensors_header_nested_200k_deep_is_a_violation(folder):
    """A weights header that is a 200 k-deep JSON array is reported as malformed weights."""
    header = ("[" * DEEP + "]" * DEEP).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    result = validate(folder, runs=3)
    assert "weights" in _fields(result)


def test_a_manifest_nested_200k_deep_is_a_violation(folder):
    """A manifest.json nested 200 k deep is reported as a bad package, not a crash."""
    (folder / "manifest.json").write_text('{"files": ' + "[" * DEEP + "]" * DEEP + "}")
    result = validate(folder, runs=3)
    assert _fields(result) == {"package.files"}


# -- contract values that used to crash ----------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("cpus", "Infinity"), ("cpus", "1e12"), ("cpus", "NaN"), ("gpus", "Infinity"), ("gpus", "1e9"),
        ("memory_mb", "1e12"), ("p99_latency_ms", "Infinity"), ("batch_wait_ms", "Infinity"),
    ],
)
def test_absurd_resources_are_violations(folder, field, value):
    """cpus Infinity or 1e12, gpus 1e9, memory_mb 1e12, p99 Infinity: each a violation at its field."""
    text = (folder / "contract.json").read_text()
    data = json.loads(text)
    data["resources"][field] = "__X__"
    (folder / "contract.json").write_text(json.dumps(data).replace('"__X__"', value))
    result = validate(folder, runs=3)
    assert not result.ok
    assert any(v.field.startswith("contract") for v in result.violations), result.violations
    assert all("Overflow" not in v.actual and "ValueError" not in v.actual for v in result.violations)


def test_a_duplicate_key_in_the_contract_is_refused(folder):
    """A contract.json naming a key twice (the last value would win) is a violation, as in the weights header."""
    text = (folder / "contract.json").read_text()
    assert text.startswith("{")
    (folder / "contract.json").write_text('{"name":"decoy",' + text[1:])
    result = validate(folder, runs=3)
    assert _fields(result) >= {"contract"}
    assert any("twice" in v.message for v in result.violations)


def test_a_duplicate_key_in_the_architecture_is_refused(folder):
    """architecture.json naming a key twice is a violation too."""
    text = (folder / "architecture.json").read_text()
    (folder / "architecture.json").write_text('{"name":"decoy",' + text[1:])
    result = validate(folder, runs=3)
    assert any(v.field.startswith("architecture") and "twice" in v.message for v in result.violations)


def test_a_negative_hidden_size_is_a_violation(folder):
    """An architecture config with hidden: [-1] is an 'architecture.config' violation, not a RuntimeError."""
    _edit_json(folder / "architecture.json", lambda d: d["config"].update(hidden=[-1]))
    result = validate(folder, runs=3)
    assert "architecture.config" in _fields(result) or any(
        v.field.startswith("weights") for v in result.violations)
    assert all("RuntimeError" not in v.actual for v in result.violations)


def test_a_huge_architecture_config_is_checked_without_allocating_it(folder):
    """hidden: [1048576, 1048576] (4 TiB of weights if built) is refused against the small weights file."""
    _edit_json(folder / "architecture.json", lambda d: d["config"].update(hidden=[1 << 20, 1 << 20]))
    code, out, peak_mib = _validate_in_a_child(folder)
    assert code == 1, out
    assert any(v["field"].startswith("weights") for v in json.loads(out)["violations"])
    assert peak_mib < 1024


# -- weights that compute nothing ------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_give_a_non_finite_output_violation(folder, value):
    """All-NaN (or all-Inf) weights make NaN outputs on the validation inputs: a violation, not a pass."""
    model = default_registry().build("mlp-classifier", CONFIG, seed=0)
    state = {k: torch.full_like(v, value) for k, v in model.state_dict().items()}
    (folder / "model.safetensors").write_bytes(save_tensors(state))
    result = validate(folder, runs=3)
    assert not result.ok
    assert any(v.field == "outputs[probabilities].values" for v in result.violations), result.violations


# -- memory bounded by a budget, checked before allocating ------------------------------------------
def _wide(store, tmp_path, *, memory_mb: int):
    config = {"in_features": 4000, "out_features": 2, "hidden": [1]}
    arch = default_registry().get("mlp-classifier")
    sig = arch.expected(config)
    contract = Contract(name="wide", inputs=sig.inputs, outputs=sig.outputs,
                        resources=Resources(p99_latency_ms=60_000, max_batch_size=65536, memory_mb=memory_mb))
    pkg = package(store, arch.build(config, seed=0), contract)
    return export(store, pkg.digest, tmp_path / f"wide-{memory_mb}")


def test_a_max_batch_too_big_for_the_replica_memory_is_a_violation(store, tmp_path):
    """4,000 features x batch 65,536 needs 1 GiB of inputs: more than memory_mb 512, so a violation, found first."""
    folder = _wide(store, tmp_path, memory_mb=512)
    code, out, peak_mib = _validate_in_a_child(folder)
    assert code == 1
    assert "resources.max_batch_size" in {v["field"] for v in json.loads(out)["violations"]}
    assert peak_mib < 1024


def test_validation_runs_within_its_memory_budget(store, tmp_path):
    """A package whose maximum batch fits its replica but not the validator's budget validates at a batch that does."""
    folder = _wide(store, tmp_path, memory_mb=8192)
    code, out, peak_mib = _validate_in_a_child(folder)
    result = json.loads(out)
    assert code == 0, result["violations"]
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["forward pass, batch 65536"]["passed"] is None
    assert "budget" in checks["forward pass, batch 65536"]["detail"]
    assert any(s["batch_size"] > 1 for s in result["latency"])
    assert peak_mib < 1024


# -- the deploy-time check against the cluster --------------------------------------------------------
def test_resources_are_checked_against_the_cluster_nodes():
    """A replica needing more CPUs, GPUs or memory than any one node has is a violation at deploy time."""
    from factory.contract import check_fits_cluster

    nodes = [{"CPU": 8.0, "memory": 32 * 2**30}, {"CPU": 4.0, "GPU": 1.0, "memory": 16 * 2**30}]
    assert check_fits_cluster(Resources(cpus=4, gpus=1, memory_mb=8192), nodes) == []
    assert check_fits_cluster(Resources(cpus=8, memory_mb=30_000), nodes) == []
    for resources, field in [(Resources(cpus=16), "resources.cpus"), (Resources(cpus=8, gpus=1), "resources"),
                             (Resources(memory_mb=64 * 1024), "resources.memory_mb"), (Resources(gpus=2), "resources.gpus")]:
        problems = check_fits_cluster(resources, nodes)
        assert problems and problems[0].field == field, problems
    assert check_fits_cluster(Resources(), [])[0].field == "resources"


def test_a_metric_too_large_for_a_float_is_refused_on_load(folder):
    """metrics.json holding a 400-digit number: load refuses it as a contract problem, not an OverflowError."""
    from factory.contract import load

    (folder / "metrics.json").write_text('{"accuracy": 1' + "0" * 400 + "}")
    with pytest.raises(ContractViolationError, match="metrics.json"):
        load(None, folder)
    assert not validate(folder, runs=3).ok
