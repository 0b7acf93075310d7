"""Safetensors weights, checked by us before the safetensors library sees a byte.

The library rejects malformed files too, but with terse messages and after it has
accepted a header of any size. Checking first lets a bad file fail with an error
that names the problem (truncated, oversized header, unknown dtype, overlapping
tensors) and caps how much memory a hostile header can claim. Loading then goes
through ``safetensors.torch.load``, which only copies bytes: no code runs.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from factory._untrusted import no_duplicate_keys, preview
from factory.errors import ContractViolationError

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_HEADER_BYTES", "DTYPE_SIZES", "TensorInfo", "Header", "check_header", "load_tensors", "save_tensors",
           "plain_tensors"]

MAX_HEADER_BYTES = 100 << 20
_MAX_DIMS = 64
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1,
    "BOOL": 1,
}
_TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it; offsets are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def torch_dtype_name(self) -> str:
        return _TORCH_NAMES[self.dtype]


@dataclass(frozen=True)
class Header:
    """A checked safetensors header."""

    tensors: tuple[TensorInfo, ...]
    metadata: tuple[tuple[str, str], ...]
    header_bytes: int
    data_bytes: int

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == name), None)


def _bad(file: str, problem: str, fix: str) -> ContractViolationError:
    return ContractViolationError(f"{file}: {problem}; {fix}")


def check_header(data: bytes | memoryview, *, file: str = "model.safetensors",
                 max_header_bytes: int = MAX_HEADER_BYTES, size: int | None = None) -> Header:
    """Parse and check a safetensors header: size cap, JSON, dtypes, shapes and offsets.

    ``data`` is the whole file, or its first bytes (at least the header) with the
    whole file's ``size`` given, so a large file is checked without reading it.
    Raises ``ContractViolationError`` naming the file and the problem.
    """
    resave = "re-save the weights with safetensors.torch.save_file"
    size = len(data) if size is None else size
    if size < 8:
        raise _bad(file, f"truncated: {size} bytes, but a safetensors file starts with an 8-byte header length", resave)
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > max_header_bytes:
        raise _bad(file, f"header of {n} bytes exceeds the cap of {max_header_bytes} bytes", resave)
    if 8 + n > size:
        raise _bad(file, f"truncated: the header claims {n} bytes but only {size - 8} follow the length", resave)
    if 8 + n > len(data):
        raise ValueError(f"check_header needs the first {8 + n} bytes of {file}, got {len(data)}")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(file, f"header is not valid JSON ({exc})", resave) from None
    except RecursionError:
        raise _bad(file, "header is nested too deeply to be a safetensors header", resave) from None
    if not isinstance(header, dict):
        raise _bad(file, "header is not a JSON object", resave)
    data_bytes = size - 8 - n

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(file, "__metadata__ must map strings to strings", resave)

    tensors = []
    for name, entry in header.items():
        tensors.append(_tensor_info(file, name, entry, data_bytes))

    position = 0
    for info in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if info.begin < position:
            raise _bad(file, f"tensor {preview(info.name)} overlaps the tensor before it (starts at byte {info.begin}, "
                             f"previous ends at {position})", resave)
        if info.begin > position:
            raise _bad(file, f"gap of {info.begin - position} bytes before tensor {preview(info.name)}", resave)
        position = info.end
    if position != data_bytes:
        raise _bad(file, f"the tensors cover {position} bytes but the data section holds {data_bytes} "
                         f"({'truncated' if position > data_bytes else 'trailing bytes'})", resave)
    return Header(tuple(tensors), tuple(sorted(metadata.items())), n, data_bytes)


def _tensor_info(file: str, name: str, entry: Any, data_bytes: int) -> TensorInfo:
    resave = "re-save the weights with safetensors.torch.save_file"
    if not name or not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _bad(file, f"tensor {preview(name)} must have exactly dtype, shape and data_offsets", resave)
    dtype = entry["dtype"]
    if dtype not in DTYPE_SIZES:
        raise _bad(file, f"tensor {preview(name)} has dtype {preview(dtype)}, which is not allowed",
                   f"use one of {', '.join(DTYPE_SIZES)}")
    shape = entry["shape"]
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape)):
        raise _bad(file, f"tensor {preview(name)} has shape {preview(shape)}; a shape is a list of at most "
                         f"{_MAX_DIMS} non-negative integers", resave)
    offsets = entry["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise _bad(file, f"tensor {preview(name)} has data_offsets {preview(offsets)}; expected [begin, end]", resave)
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise _bad(file, f"tensor {preview(name)} has data_offsets [{begin}, {end}] outside the "
                         f"{data_bytes}-byte data section (truncated file?)", resave)
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise _bad(file, f"tensor {preview(name)} spans {end - begin} bytes but shape {preview(shape)} of {dtype} "
                         f"needs {expected}", resave)
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def load_tensors(data: bytes, *, file: str = "model.safetensors") -> tuple[Header, dict[str, torch.Tensor]]:
    """Check the header, then load every tensor with ``safetensors.torch.load`` (copies bytes, runs no code)."""
    header = check_header(data, file=file)
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(bytes(data))
    except SafetensorError as exc:  # pragma: no cover - our checks should catch what the library does
        raise _bad(file, f"safetensors refused the file ({exc})", "re-save the weights") from None
    return header, tensors


def save_tensors(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Serialise a state dict deterministically (same tensors, same bytes).

    The header holds one metadata key at most: the library writes metadata from a
    hash map, whose order is not fixed for more than one key.
    """
    from safetensors.torch import save

    return save(plain_tensors(tensors), metadata={"format": "pt"})


def plain_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, refusing tied weights (which safetensors cannot hold)."""
    plain = {}
    seen: dict[tuple[int, int], str] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and key in seen:
            raise ContractViolationError(
                f"tensors {seen[key]!r} and {name!r} share memory (tied weights): "
                "untie them or register the shared tensor once before packaging"
            )
        seen[key] = name
        plain[name] = tensor.contiguous()
    return plain
