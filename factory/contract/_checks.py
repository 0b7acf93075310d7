"""The individual checks of a package against its contract, each returning violations.

Loading raises on the first list that is not empty; the validation harness runs them
all and reports every violation at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from factory.contract._safetensors import Header
from factory.contract._schema import Contract, DType, InputSpec, Resources, TensorSpec
from factory.contract.architectures import Signature
from factory.errors import ContractViolationError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "Violation",
    "state_of_header",
    "state_of_module",
    "compare_state",
    "check_signature",
    "check_outputs",
    "make_inputs",
    "to_tensors",
    "name_outputs",
    "raise_if_any",
    "input_bytes",
    "check_fits_cluster",
]

_SAFETENSORS_OF_TORCH = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}


@dataclass(frozen=True)
class Violation:
    """One way a package breaks its contract: which field, what was expected, what was found."""

    field: str
    expected: str
    actual: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, got {self.actual} ({self.message})"


def raise_if_any(violations: list[Violation], what: str) -> None:
    if violations:
        lines = "\n".join(f"  - {v}" for v in violations)
        raise ContractViolationError(f"{what}: {len(violations)} problem(s)\n{lines}")


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# -- weights against the architecture ------------------------------------------------
State = Mapping[str, tuple[str, tuple[int, ...]]]


def state_of_header(header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t.name: (t.dtype, t.shape) for t in header.tensors}


def state_of_module(module: torch.nn.Module) -> dict[str, tuple[str, tuple[int, ...]]]:
    out = {}
    for name, tensor in module.state_dict().items():
        torch_name = str(tensor.dtype).removeprefix("torch.")
        out[name] = (_SAFETENSORS_OF_TORCH.get(torch_name, torch_name), tuple(tensor.shape))
    return out


def compare_state(expected: State, actual: State, arch: str) -> list[Violation]:
    """Tensors the architecture needs against the tensors the weights hold: names, shapes, dtypes."""
    out = []
    for name, (dtype, shape) in expected.items():
        if name not in actual:
            out.append(Violation(f"weights[{name}]", f"{dtype} {shape_text(shape)}", "missing",
                                 f"the weights have no tensor {name!r}, which {arch} needs"))
            continue
        got_dtype, got_shape = actual[name]
        if got_shape != shape:
            out.append(Violation(f"weights[{name}].shape", shape_text(shape), shape_text(got_shape),
                                 f"{arch} with this config needs {name!r} shaped {shape_text(shape)}"))
        if got_dtype != dtype:
            out.append(Violation(f"weights[{name}].dtype", dtype, got_dtype,
                                 f"{arch} holds {name!r} as {dtype}; re-save the weights in that dtype"))
    for name in sorted(set(actual) - set(expected)):
        dtype, shape = actual[name]
        out.append(Violation(f"weights[{name}]", "no such tensor", f"{dtype} {shape_text(shape)}",
                             f"the weights hold {name!r}, which {arch} does not have (wrong architecture or config?)"))
    return out


# -- contract against the architecture's signature ------------------------------------
def _width(spec: TensorSpec) -> int | None:
    dims = spec.shape[1:]
    return None if any(d == -1 for d in dims) else math.prod(dims)


def _compatible(contract_shape: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    if len(contract_shape) != len(actual):
        return False
    return all(c == -1 or c == a for c, a in zip(contract_shape, actual, strict=True))


def check_signature(contract: Contract, signature: Signature, arch: str) -> list[Violation]:
    """Static checks: does the contract describe what the architecture, as configured, takes and returns?"""
    out = []
    if signature.input_width is not None:
        widths = [_width(i) for i in contract.inputs]
        if all(w is not None for w in widths):
            total = sum(widths)  # type: ignore[arg-type]
            if total != signature.input_width:
                layout = ", ".join(f"{i.name} {shape_text(i.shape)}" for i in contract.inputs)
                out.append(Violation("inputs", f"{signature.input_width} values per row", f"{total} ({layout})",
                                     f"the weights of {arch} take {signature.input_width} input values per row"))
    declared = {o.name: o for o in contract.outputs}
    produced = {o.name: o for o in signature.outputs}
    for name, want in produced.items():
        have = declared.get(name)
        if have is None:
            out.append(Violation(f"outputs[{name}]", f"{want.dtype} {shape_text(want.shape)}", "not declared",
                                 f"{arch} returns {name!r}; declare it in the contract's outputs"))
            continue
        if have.dtype != want.dtype:
            out.append(Violation(f"outputs[{name}].dtype", str(want.dtype), str(have.dtype),
                                 f"{arch} returns {name!r} as {want.dtype}"))
        if not _compatible(have.shape, want.shape):
            out.append(Violation(f"outputs[{name}].shape", shape_text(want.shape), shape_text(have.shape),
                                 f"the weights of {arch} produce {name!r} shaped {shape_text(want.shape)}"))
    for name in declared:
        if name not in produced:
            out.append(Violation(f"outputs[{name}]", "an output of the model", "not produced",
                                 f"{arch} returns only {sorted(produced)}; remove {name!r} from the contract"))
    return out


# -- running the model ------------------------------------------------------------------
_ITEM_BYTES = {DType.BOOL: 1, DType.UINT8: 1, DType.INT8: 1, DType.UINT16: 2, DType.INT16: 2, DType.FP16: 2,
               DType.UINT32: 4, DType.INT32: 4, DType.FP32: 4, DType.UINT64: 8, DType.INT64: 8, DType.FP64: 8,
               DType.BYTES: 64}  # a Python bytes object and its pointer, roughly


def _input_shape(spec: TensorSpec, batch_size: int, free_dim: int) -> tuple[int, ...]:
    return (batch_size,) + tuple(free_dim if d == -1 else d for d in spec.shape[1:])


def input_bytes(contract: Contract, batch_size: int, free_dim: int = 2) -> int:
    """The memory that ``make_inputs`` needs for ``batch_size`` rows: known before anything is allocated."""
    return sum(math.prod(_input_shape(spec, batch_size, free_dim)) * _ITEM_BYTES[spec.dtype]
               for spec in contract.inputs)


def make_inputs(contract: Contract, batch_size: int, seed: int = 0, free_dim: int = 2) -> dict[str, np.ndarray]:
    """Inputs that fit the contract: the batch dimension set, other variable dimensions ``free_dim``.

    Each array is drawn in its own dtype, so it takes ``input_bytes`` and no more.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for spec in contract.inputs:
        shape = _input_shape(spec, batch_size, free_dim)
        if spec.dtype in (DType.FP32, DType.FP64):
            out[spec.name] = rng.standard_normal(shape, dtype=spec.dtype.numpy_name)
        elif spec.dtype is DType.FP16:
            out[spec.name] = rng.standard_normal(shape, dtype="float32").astype("float16")
        elif spec.dtype is DType.BOOL:
            out[spec.name] = rng.integers(0, 2, size=shape, dtype="uint8").view(bool)
        elif spec.dtype is DType.BYTES:
            out[spec.name] = np.full(shape, b"x", dtype=object)
        else:
            out[spec.name] = rng.integers(0, 10, size=shape, dtype=spec.dtype.numpy_name)
    return out


def to_tensors(contract: Contract, inputs: Mapping[str, Any]) -> list[torch.Tensor]:
    """The inputs as tensors in contract order, each checked against its spec."""

    missing = [i.name for i in contract.inputs if i.name not in inputs]
    extra = sorted(set(inputs) - {i.name for i in contract.inputs})
    if missing or extra:
        raise ContractViolationError(
            f"inputs {sorted(inputs)} do not match the contract's {[i.name for i in contract.inputs]}"
            + (f": missing {missing}" if missing else "") + (f": unexpected {extra}" if extra else "")
        )
    tensors = []
    batch = None
    for spec in contract.inputs:
        if spec.dtype is DType.BYTES:
            raise ContractViolationError(
                f"input {spec.name!r} is BYTES, which a torch model cannot take: declare a numeric dtype"
            )
        tensor = _as_tensor(spec, inputs[spec.name])
        if batch is None:
            batch = tensor.shape[0] if tensor.ndim else None
        if not spec.matches(tuple(tensor.shape), batch):
            raise ContractViolationError(
                f"input {spec.name!r} has shape {shape_text(tuple(tensor.shape))}; the contract wants "
                f"{shape_text(spec.shape)} with the same batch size as the other inputs"
            )
        tensors.append(tensor)
    return tensors


def _as_tensor(spec: InputSpec, value: Any) -> torch.Tensor:
    """One input as a tensor of its contract dtype; nulls only where ``nullable`` allows them."""
    import numpy as np
    import torch

    want = getattr(torch, spec.dtype.torch_name)
    if isinstance(value, torch.Tensor):
        return value.to(want)
    floats = spec.dtype in (DType.FP16, DType.FP32, DType.FP64)
    if isinstance(value, np.ma.MaskedArray):
        if value.mask is not np.ma.nomask and value.mask.any() and not spec.nullable:
            raise ContractViolationError(f"input {spec.name!r} holds nulls but is not nullable: send values")
        value = value.filled(np.nan if floats else 0)
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ContractViolationError(f"input {spec.name!r} is not a rectangular array ({exc}): send one value "
                                     "per position of its shape") from None
    if array.dtype == object:
        flat = array.ravel()
        nulls = np.fromiter((v is None for v in flat), dtype=bool, count=flat.size)
        if nulls.any():
            if not spec.nullable:
                raise ContractViolationError(f"input {spec.name!r} holds a null (None) but is not nullable: send a "
                                             "value, or declare the input nullable in the contract")
            if not floats:
                raise ContractViolationError(f"input {spec.name!r} is {spec.dtype} and holds None: pass a numpy "
                                             "masked array, or send the request through check_request")
        if any(isinstance(v, (str, bytes)) for v in flat):
            raise ContractViolationError(f"input {spec.name!r} holds strings or raw bytes; the contract wants "
                                         f"{spec.dtype}")
        array = np.where(nulls.reshape(array.shape), np.nan, array) if nulls.any() else array
        try:
            array = array.astype(spec.dtype.numpy_name)
        except (TypeError, ValueError) as exc:
            raise ContractViolationError(f"input {spec.name!r} cannot be read as {spec.dtype}: {exc}") from None
    elif array.dtype.kind in "USV":
        raise ContractViolationError(f"input {spec.name!r} holds strings or raw bytes; the contract wants "
                                     f"{spec.dtype}")
    try:
        return torch.as_tensor(array, dtype=want)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ContractViolationError(f"input {spec.name!r} cannot be read as {spec.dtype}: {exc}") from None


def name_outputs(raw: Any, contract: Contract) -> dict[str, torch.Tensor]:
    """A model's return value as ``{output name: tensor}``: a dict as is, a tensor or tuple by position."""
    import torch

    names = [o.name for o in contract.outputs]
    if isinstance(raw, Mapping):
        named = dict(raw)
    elif isinstance(raw, torch.Tensor):
        named = {names[0]: raw} if len(names) == 1 else {"<tensor>": raw}
    elif isinstance(raw, (tuple, list)):
        if len(raw) != len(names):
            raise ContractViolationError(
                f"the model returned {len(raw)} values but the contract declares {len(names)} outputs {names}: "
                "return a dict keyed by output name"
            )
        named = dict(zip(names, raw, strict=True))
    else:
        raise ContractViolationError(
            f"the model returned a {type(raw).__name__}: return a tensor, a tuple or a dict keyed by output name"
        )
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise ContractViolationError(f"output {name!r} is a {type(value).__name__}, not a tensor")
    return named


def check_outputs(contract: Contract, outputs: Mapping[str, torch.Tensor], batch_size: int) -> list[Violation]:
    """Every declared output present with its dtype and shape; nothing undeclared."""
    out = []
    for spec in contract.outputs:
        tensor = outputs.get(spec.name)
        if tensor is None:
            out.append(Violation(f"outputs[{spec.name}]", f"{spec.dtype} {shape_text(spec.shape)}", "not returned",
                                 f"the model returned only {sorted(outputs)}"))
            continue
        dtype = DType.from_torch(tensor.dtype)
        if dtype != spec.dtype:
            out.append(Violation(f"outputs[{spec.name}].dtype", str(spec.dtype),
                                 str(dtype or tensor.dtype), "the model returned another dtype"))
        shape = tuple(tensor.shape)
        if not spec.matches(shape, batch_size):
            want = (batch_size,) + spec.shape[1:]
            out.append(Violation(f"outputs[{spec.name}].shape", f"{shape_text(want)} at batch size {batch_size}",
                                 shape_text(shape), f"the contract declares {shape_text(spec.shape)}"))
        if tensor.is_floating_point():
            bad = int((~tensor.isfinite()).sum())
            if bad:
                out.append(Violation(f"outputs[{spec.name}].values", "finite values on the validation inputs",
                                     f"{bad} of {tensor.numel()} NaN or infinite",
                                     "the model outputs NaN or infinity on ordinary inputs: check its weights"))
    for name in sorted(set(outputs) - {o.name for o in contract.outputs}):
        out.append(Violation(f"outputs[{name}]", "not returned (undeclared)", "returned",
                             "the model returns an output the contract does not declare; declare it"))
    return out


# -- the contract against a cluster, at deploy time ------------------------------------------
def check_fits_cluster(resources: Resources, nodes: Iterable[Mapping[str, float]]) -> list[Violation]:
    """Whether one replica fits on at least one node; an empty list when it does.

    ``nodes``: each node's resources as Ray reports them (``ray.nodes()[i]["Resources"]``:
    ``CPU``, ``GPU`` and ``memory`` in bytes). Serving calls this before it deploys; the
    contract alone bounds resources only by sane limits.
    """
    nodes = [dict(n) for n in nodes]
    if not nodes:
        return [Violation("resources", "a cluster with at least one node", "no nodes",
                          "no node reports its resources: start the cluster (ray start) and retry")]
    wants = {"cpus": ("CPU", resources.cpus, 1.0), "gpus": ("GPU", resources.gpus, 1.0),
             "memory_mb": ("memory", resources.memory_mb, float(1 << 20))}
    missing = []
    for field, (key, want, unit) in wants.items():
        largest = max(n.get(key, 0.0) for n in nodes) / unit
        if want > largest:
            missing.append(Violation(f"resources.{field}", f"at most {largest:g} (the largest node)", f"{want:g}",
                                     f"no node has {want:g} {key}: lower resources.{field} or add a larger node"))
    if missing:
        return missing
    if not any(all(n.get(key, 0.0) >= want * unit for key, want, unit in wants.values()) for n in nodes):
        need = ", ".join(f"{want:g} {key}" for key, want, _ in wants.values())
        return [Violation("resources", f"one node with {need}", "no such node",
                          "each resource exists on some node, but no single node has them all: "
                          "lower the request or add a node that can hold a whole replica")]
    return []
