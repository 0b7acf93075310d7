"""Our safetensors header checks: every malformed file is a clear error before the library reads it."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load

from factory.contract._safetensors import check_header, load_tensors, save_tensors
from factory.errors import ContractViolationError

TENSORS = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}


def raw(header: dict, data: bytes = b"") -> bytes:
    """A safetensors file from a header dict and a data section, written by hand."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def good_header() -> dict:
    return {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}


def test_a_good_file_passes_and_describes_its_tensors():
    """A file written by save_tensors passes, and the header lists each tensor with dtype and shape."""
    data = save_tensors(TENSORS)
    header = check_header(data)
    assert {t.name: (t.dtype, t.shape) for t in header.tensors} == {"w": ("F32", (2, 3)), "b": ("I64", (2,))}
    _, tensors = load_tensors(data)
    assert all(tensors[k].equal(v) for k, v in TENSORS.items())


def test_saving_is_deterministic_and_plain_safetensors():
    """The same tensors give the same bytes, which the safetensors library loads as they are."""
    assert save_tensors(TENSORS) == save_tensors(dict(reversed(list(TENSORS.items()))))
    loaded = st_load(save_tensors(TENSORS))
    assert loaded["w"].equal(TENSORS["w"])


def test_tied_weights_are_refused_with_a_fix():
    """Two names for one tensor cannot be written; the error names both."""
    shared = torch.ones(3)
    with pytest.raises(ContractViolationError, match="'a' and 'b' share memory"):
        save_tensors({"a": shared, "b": shared})


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x01\x02", "truncated: 2 bytes"),
        (struct.pack("<Q", 500) + b"{}", "truncated: the header claims 500 bytes"),
        (struct.pack("<Q", 200 << 20) + b"{", "exceeds the cap"),
        (raw(good_header(), b"\x00" * 30), "truncated"),
        (raw(good_header(), b"\x00" * 41), "trailing bytes"),
        (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
    ids=["short", "header-past-end", "oversized-header", "truncated-data", "trailing", "bad-json", "not-object"],
)
def test_malformed_files_name_the_problem(data, problem):
    """Truncation, an oversized header, bad JSON and stray bytes each raise an error that says which."""
    with pytest.raises(ContractViolationError, match=problem):
        check_header(data)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda h: h["w"].update(dtype="F8_E4M3"), "dtype 'F8_E4M3', which is not allowed"),
        (lambda h: h["w"].update(dtype="OBJECT"), "not allowed"),
        (lambda h: h["w"].update(shape=[2, -3]), "non-negative integers"),
        (lambda h: h["w"].update(shape=[2, 2]), "spans 24 bytes but shape"),
        (lambda h: h["b"].update(data_offsets=[16, 32]), "overlaps"),
        (lambda h: h["b"].update(data_offsets=[24, 4000]), "outside the 40-byte data section"),
        (lambda h: h["w"].pop("dtype"), "exactly dtype, shape and data_offsets"),
        (lambda h: h.update(__metadata__={"k": 1}), "__metadata__"),
    ],
    ids=["fp8", "unknown-dtype", "negative-dim", "size-mismatch", "overlap", "out-of-bounds", "no-dtype", "metadata"],
)
def test_bad_tensor_entries_name_the_tensor(change, problem):
    """Each bad header entry is refused with the tensor and the problem named."""
    header = good_header()
    change(header)
    with pytest.raises(ContractViolationError, match=problem):
        check_header(raw(header, b"\x00" * 40))


def test_a_gap_between_tensors_is_refused():
    """Bytes between tensors (room for a hidden payload) are refused."""
    header = good_header()
    header["b"]["data_offsets"] = [32, 48]
    with pytest.raises(ContractViolationError, match="gap of 8 bytes before tensor 'b'"):
        check_header(raw(header, b"\x00" * 48))


def test_duplicate_keys_in_the_header_are_refused():
    """A header naming one tensor twice is ambiguous and refused."""
    text = b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    with pytest.raises(ContractViolationError, match="appears twice"):
        check_header(struct.pack("<Q", len(text)) + text + b"\x00")


def test_the_header_cap_is_configurable():
    """A caller can lower the cap; a header above it is refused before it is parsed."""
    with pytest.raises(ContractViolationError, match="cap of 16 bytes"):
        check_header(save_tensors(TENSORS), max_header_bytes=16)


GOOD = save_tensors(TENSORS)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_corrupted_files_either_pass_our_checks_and_load_or_fail_clearly(data):
    """Random byte edits never reach the library unchecked: our check refuses the file or the library loads it."""
    blob = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        check_header(bytes(blob))
    except ContractViolationError:
        return
    st_load(bytes(blob))  # must not raise: whatever passes our checks is a file the library accepts
