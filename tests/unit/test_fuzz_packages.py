"""Fuzzing the package reader: safetensors headers, contract and architecture JSON, card YAML, manifests.

The property, for every input: it passes, or it is refused with a ``FactoryError`` (for
the validator: reported as violations); no other exception, no hang past the deadline,
no memory past a bound.
"""

from __future__ import annotations

import json
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.contract import Contract, default_registry
from factory.contract._assemble import read_architecture, read_contract
from factory.contract._card import parse_card
from factory.contract._files import _parse_manifest
from factory.contract._safetensors import DTYPE_SIZES, check_header
from factory.errors import ContractViolationError, FactoryError

FUZZ = settings(max_examples=80, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MEMORY_BOUND = 64 << 20

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=24)


def bounded(fn, *args):
    """Call ``fn``, failing if it allocates more than MEMORY_BOUND along the way; FactoryError is a pass."""
    tracemalloc.start()
    try:
        return fn(*args)
    except FactoryError:
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_BOUND, f"{fn.__name__} allocated {peak:,} bytes"


# -- safetensors headers ------------------------------------------------------------------
tensor_entries = st.fixed_dictionaries({
    "dtype": st.sampled_from([*DTYPE_SIZES, "F8_E4M3", "x", ""]) | json_scalars,
    "shape": st.lists(st.integers(-3, 2**66), max_size=5) | json_values,
    "data_offsets": st.lists(st.integers(-5, 2**66), max_size=3) | json_values,
})
headers = st.dictionaries(st.text(max_size=10), tensor_entries | json_values, max_size=5)


@FUZZ
@given(header=headers | json_values, body=st.binary(max_size=64), skew=st.integers(-12, 12))
def test_safetensors_headers_are_checked_or_refused(header, body, skew):
    """Any JSON header, any length field, any body: a checked Header or a ContractViolationError."""
    text = json.dumps(header).encode()
    bounded(check_header, struct.pack("<Q", max(0, len(text) + skew)) + text + body)


@FUZZ
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_as_weights_are_refused(data):
    """Random bytes as model.safetensors never raise anything but ContractViolationError."""
    bounded(check_header, data)


def test_a_deep_safetensors_header_is_refused():
    """A header nested 100 k deep is refused, not a RecursionError."""
    text = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ContractViolationError):
        check_header(struct.pack("<Q", len(text)) + text)


# -- contract and architecture JSON --------------------------------------------------------
def _good_contract() -> dict:
    sig = default_registry().get("mlp-classifier").expected({"in_features": 4, "out_features": 3})
    return json.loads(Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs).to_json())


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def mutated(draw, base):
    paths = list(_paths(base))
    value = base
    for _ in range(draw(st.integers(1, 3))):
        value = _replace(value, draw(st.sampled_from(paths)), draw(json_values)) if paths else value
        paths = list(_paths(value))
    text = json.dumps(value, allow_nan=True)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=8)) + text[cut:]
    return text.encode()


@FUZZ
@given(data=mutated(_good_contract()) | st.binary(max_size=200))
def test_contract_json_is_a_contract_or_violations(data):
    """A mutated contract.json is read as a contract or as violations, never an exception."""
    contract, problems = bounded(read_contract, data)
    assert (contract is None) == bool(problems)
    for v in problems:
        assert len(v.actual) <= 200 and v.field.startswith("contract")


@FUZZ
@given(data=mutated({"name": "mlp-classifier", "version": "1", "config": {"in_features": 4, "out_features": 3},
                     "code_digest": default_registry().get("mlp-classifier").code_digest}) | st.binary(max_size=200))
def test_architecture_json_is_a_reference_or_violations(data):
    """A mutated architecture.json resolves to an architecture or gives violations, never an exception."""
    ref, arch, problems = bounded(read_architecture, data, default_registry())
    assert (arch is None) == bool(problems)


# -- card YAML -----------------------------------------------------------------------------
yaml_text = st.text(alphabet=st.sampled_from(list("ab01:-[]{}&*!|>'\" ,#\n\t.?%@`~=")), max_size=300)


@st.composite
def alias_chains(draw):
    """Anchors and aliases nested in layers: from harmless reuse to a billion laughs."""
    width, levels = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    lines = ["a0: &a0 [x, y]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines)


@FUZZ
@given(front=yaml_text | alias_chains() | json_values.map(json.dumps))
def test_card_front_matter_parses_or_is_refused(front):
    """Any front matter, alias bombs included: a dict or ContractViolationError, in bounded memory."""
    result = bounded(parse_card, f"---\n{front}\n---\n# model\n")
    assert result is None or isinstance(result, dict)


# -- manifests -------------------------------------------------------------------------------
@FUZZ
@given(data=mutated({"format": "factory.model-package/v1", "files": {"contract.json": "sha256:" + "0" * 64}})
       | st.binary(max_size=200))
def test_manifests_parse_or_are_refused(data):
    """A mutated manifest.json gives a file map or ContractViolationError."""
    files = bounded(_parse_manifest, data, "fuzzed package")
    assert files is None or all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())


# -- a whole package ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    from factory.contract import export, package
    from factory.settings import Settings
    from factory.store import Store

    home = tmp_path_factory.mktemp("fuzz-home")
    store = Store(home, settings=Settings(home=str(home)))
    config = {"in_features": 4, "out_features": 3, "hidden": [4]}
    sig = default_registry().get("mlp-classifier").expected(config)
    pkg = package(store, default_registry().build("mlp-classifier", config, seed=0),
                  Contract(name="iris", inputs=sig.inputs, outputs=sig.outputs), metrics={"accuracy": 0.5})
    folder = export(store, pkg.digest, home / "pkg")
    (folder / "manifest.json").unlink()
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@settings(max_examples=25, deadline=20000, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["contract.json", "architecture.json", "README.md", "metrics.json", "model.safetensors"]),
       cut=st.integers(0, 10_000), noise=st.binary(max_size=40))
def test_a_damaged_package_folder_gives_violations_not_exceptions(tmp_path_factory, good_files, which, cut, noise):
    """One file of a good package cut and spliced with noise: validate returns violations and never raises."""
    from factory.contract import validate

    folder = tmp_path_factory.mktemp("pkg")
    for name, data in good_files.items():
        (folder / name).write_bytes(data)
    data = good_files[which]
    (folder / which).write_bytes(data[: cut % (len(data) + 1)] + noise)
    result = validate(folder, runs=3, budget_s=0.1)
    assert result.ok or result.violations
