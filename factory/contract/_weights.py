"""A package's weights: one safetensors file, or Hugging Face shards, streamed a file at a time.

Two layouts, as Hugging Face writes them:

- ``model.safetensors``;
- ``model-00001-of-0000N.safetensors`` ... ``model-0000N-of-0000N.safetensors`` plus
  ``model.safetensors.index.json`` (``{"metadata": {"total_size": <tensor bytes>},
  "weight_map": {tensor: file}}``).

Packing writes one shard at a time into the blob store, streamed from the tensors
themselves (``shard_stream``: no serialised copy of a shard in memory). Loading reads
each file straight into the tensors it holds and hashes those very bytes; the file's
digest is checked at its end, so tampered weights never reach a module. Files load
in parallel, one per core, and the peak memory is the weights plus a few buffers
(see ``benchmarks/bench_sharded.py``). Headers are checked from a file's first bytes
before anything is allocated.
"""

from __future__ import annotations

import ctypes
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from factory._untrusted import load_json, preview
from factory.contract._safetensors import MAX_HEADER_BYTES, Header, TensorInfo, check_header, plain_tensors
from factory.contract._schema import canonical_json
from factory.errors import ContractViolationError

if TYPE_CHECKING:
    import torch

    from factory.store import VerifyingReader

__all__ = [
    "WEIGHTS",
    "INDEX",
    "DEFAULT_SHARD_BYTES",
    "MAX_INDEX_BYTES",
    "WeightsFile",
    "Weights",
    "shard_name",
    "weights_layout",
    "is_weights_name",
    "plan_shards",
    "shard_stream",
    "index_bytes",
    "weights_digest",
]

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Models above this are packed as shards; below it, as one file (byte for byte as before).
DEFAULT_SHARD_BYTES = 1 << 30
MAX_INDEX_BYTES = 64 << 20
_PIECE = 4 << 20
_SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
_TORCH_TO_SAFETENSORS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}


def shard_name(number: int, count: int) -> str:
    return f"model-{number:05d}-of-{count:05d}.safetensors"


def is_shard(name: str) -> bool:
    return _SHARD.fullmatch(name) is not None


def is_weights_name(name: str) -> bool:
    """Whether ``name`` belongs to the weights (a file, a would-be shard, or the index)."""
    return name in (WEIGHTS, INDEX) or (name.startswith("model-") and name.endswith(".safetensors"))


def weights_layout(names: Sequence[str], where: str) -> list[str]:
    """The weights files among ``names``, in load order; raises unless exactly one layout is complete."""
    odd = sorted(n for n in names if is_weights_name(n) and n not in (WEIGHTS, INDEX) and not is_shard(n))
    if odd:
        raise ContractViolationError(
            f"{where} holds {odd}, named like shards but not model-00001-of-0000N.safetensors: rename or remove them")
    shards = sorted(n for n in names if is_shard(n))
    single = WEIGHTS in names
    if single and (shards or INDEX in names):
        raise ContractViolationError(
            f"{where} holds both {WEIGHTS} and sharded weights: keep one layout (re-package the model)")
    if single:
        return [WEIGHTS]
    if not shards and INDEX not in names:
        raise ContractViolationError(f"{where} lacks ['{WEIGHTS}']: write the package with factory.contract.package")
    counts = {int(_SHARD.fullmatch(n).group(2)) for n in shards}
    count = counts.pop() if len(counts) == 1 else 0
    expected = [shard_name(i, count) for i in range(1, count + 1)]
    if INDEX not in names or not count or shards != expected:
        raise ContractViolationError(
            f"{where} holds an incomplete set of shards {shards} (index {'present' if INDEX in names else 'missing'}): "
            f"sharded weights are {INDEX} plus model-00001-of-0000N.safetensors up to N, each exactly once")
    return expected


@dataclass(frozen=True)
class WeightsFile:
    """One weights file: its name, digest and size, and how to stream it (checked at its end)."""

    name: str
    digest: str
    size: int
    open: Callable[[], VerifyingReader]


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """A writable view of a contiguous CPU tensor's bytes (any dtype, bfloat16 included)."""
    n = tensor.numel() * tensor.element_size()
    if n == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_char * n).from_address(tensor.data_ptr())).cast("B")


@dataclass(frozen=True)
class Weights:
    """A package's weights files and, for shards, the index that maps tensors to files."""

    files: tuple[WeightsFile, ...]
    index: bytes | None
    where: str
    _headers: list[tuple[Header, bytes]] = field(default_factory=list, compare=False, repr=False)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def prefix(self, file: WeightsFile, n: int) -> bytes:
        """The first ``n`` bytes of ``file`` (unverified: for sniffing and headers only)."""
        with file.open() as stream:
            return _read_up_to(stream, min(n, file.size))

    def _header(self, file: WeightsFile) -> tuple[Header, bytes]:
        """A file's checked header, from its first bytes, and those bytes."""
        with file.open() as stream:
            head = _read_up_to(stream, min(8, file.size))
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                if n <= MAX_HEADER_BYTES and 8 + n <= file.size:
                    head += _read_up_to(stream, n)
                    if len(head) < 8 + n:  # shorter than the store said: cut short since
                        return check_header(head, file=file.name, size=len(head)), head
        return check_header(head, file=file.name, size=file.size), head

    def file_header(self, name: str) -> Header:
        """The checked header of the weights file ``name``, from its first bytes."""
        for file in self.files:
            if file.name == name:
                return self._header(file)[0]
        raise ContractViolationError(f"{self.where} has no weights file {name!r}: it holds "
                                     f"{[f.name for f in self.files]}")

    def header(self) -> Header:
        """Every file's header checked, and all of them as one (for the tensor-by-tensor checks).

        Raises ``ContractViolationError`` for a malformed header, a tensor in two files,
        or an index that disagrees with the files.
        """
        per_file = [self._header(f) for f in self.files]
        tensors: dict[str, TensorInfo] = {}
        holder: dict[str, str] = {}
        for file, (header, _) in zip(self.files, per_file, strict=True):
            for info in header.tensors:
                if info.name in tensors:
                    raise ContractViolationError(
                        f"tensor {preview(info.name)} is in both {holder[info.name]} and {file.name}: re-package the model")
                tensors[info.name] = info
                holder[info.name] = file.name
        if self.index is not None:
            self._check_index(holder, sum(h.data_bytes for h, _ in per_file))
        self._headers[:] = per_file
        return Header(tuple(tensors.values()), per_file[0][0].metadata if per_file else (),
                      sum(h.header_bytes for h, _ in per_file), sum(h.data_bytes for h, _ in per_file))

    def _check_index(self, holder: Mapping[str, str], total: int) -> None:
        problem = None
        try:
            doc = load_json(self.index, what=INDEX, max_bytes=MAX_INDEX_BYTES, error=ValueError)
            weight_map = doc["weight_map"]
            declared = doc.get("metadata", {}).get("total_size")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ValueError("weight_map must map tensor names to file names")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ContractViolationError(f"{INDEX} of {self.where} is not a shard index ({preview(str(exc), 200)}): re-package the model"
                                         ) from None
        if weight_map != dict(holder):
            wrong = sorted(set(weight_map.items()) ^ set(holder.items()))[:3]
            problem = f"its weight_map disagrees with the shards' headers (first differences: {preview(wrong, 300)})"
        elif declared is not None and declared != total:
            problem = f"its total_size is {preview(declared)} but the shards hold {total} bytes of tensors"
        if problem:
            raise ContractViolationError(f"{INDEX} of {self.where}: {problem}; re-package the model")

    def load(self, *, workers: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Each file's tensors, in file order, read and verified on up to ``workers`` threads.

        Raises ``CorruptBlobError`` for a file that does not match its digest; the
        tensors read from it are dropped.
        """
        import os

        if not self._headers:
            self.header()
        headers = list(self._headers)
        workers = workers or min(len(self.files), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else os.cpu_count() or 1)
        jobs = list(zip(self.files, headers, strict=True))
        if workers <= 1 or len(jobs) <= 1:
            for file, (header, head) in jobs:
                yield self._load_file(file, header, head)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weights") as pool:
            futures = [pool.submit(self._load_file, file, header, head) for file, (header, head) in jobs]
            try:
                for future in futures:
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()

    def _load_file(self, file: WeightsFile, header: Header, head: bytes) -> dict[str, torch.Tensor]:
        import torch

        with file.open() as stream:
            if _read_up_to(stream, len(head)) != head:
                raise ContractViolationError(f"{file.name} of {self.where} changed while it was loaded: load it again")
            out = {}
            for info in sorted(header.tensors, key=lambda t: t.begin):
                tensor = torch.empty(info.shape, dtype=getattr(torch, info.torch_dtype_name))
                view = _bytes_of(tensor)
                filled = 0
                while filled < len(view):
                    # A few MiB at a time: hashed while still in the CPU cache, not read back from memory.
                    n = stream.readinto(view[filled : filled + _PIECE])  # a premature end fails the digest check
                    if not n:
                        raise ContractViolationError(f"{file.name} of {self.where} ended early: re-package the model")
                    filled += n
                out[info.name] = tensor
            stream.verify()  # nothing is left to read: this checks the digest of every byte read
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of every file, verified (the whole weights in memory)."""
        out: dict[str, torch.Tensor] = {}
        for part in self.load():
            out.update(part)
        return out


# -- packing -------------------------------------------------------------------------
def plan_shards(sizes: Mapping[str, int], max_bytes: int) -> list[list[str]]:
    """Tensors (in their order) grouped into shards of at most ``max_bytes``; a larger tensor gets its own."""
    shards: list[list[str]] = [[]]
    filled = 0
    for name, size in sizes.items():
        if shards[-1] and filled + size > max_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    return shards


def shard_stream(tensors: Mapping[str, torch.Tensor]) -> tuple[BinaryIO, int]:
    """A safetensors file of ``tensors`` as a stream, and its size; the same tensors give the same bytes.

    Tensors are laid out by element size (largest first) then name, so every offset is
    aligned for its dtype, as the safetensors library does; the header is canonical
    JSON padded to a multiple of 8 bytes.
    """
    plain = plain_tensors(tensors)
    order = sorted(plain, key=lambda n: (-plain[n].element_size(), n))
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in order:
        t = plain[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _TORCH_TO_SAFETENSORS[str(t.dtype).removeprefix("torch.")],
                        "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = canonical_json(header)
    text += b" " * (-len(text) % 8)
    from factory.store import MemoryReader

    parts = [struct.pack("<Q", len(text)), text, *(_bytes_of(plain[n]) for n in order)]
    return MemoryReader(*parts, keep=plain), 8 + len(text) + offset


def index_bytes(weight_map: Mapping[str, str], total_size: int) -> bytes:
    """``model.safetensors.index.json`` as Hugging Face writes it, in canonical JSON."""
    return canonical_json({"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})


def weights_digest(files: Mapping[str, str]) -> str:
    """What names a package's weights, from its file -> digest map: the digest of
    ``model.safetensors``, or for shards the SHA-256 of their digests (index included)
    as canonical JSON, so equal weights give equal digests in either layout's own terms."""
    if WEIGHTS in files:
        return files[WEIGHTS]
    import hashlib

    shards = {name: digest for name, digest in files.items() if is_weights_name(name)}
    return "sha256:" + hashlib.sha256(canonical_json({"format": "factory.weights/v1", "files": shards})).hexdigest()
