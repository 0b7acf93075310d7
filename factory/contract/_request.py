"""The one check of an inference request against its model's contract.

A request is an Open Inference Protocol (KServe V2) ``infer`` body: JSON with row-major
``data`` per input, or the binary tensor extension (a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw tensors, as
``tritonclient.http`` sends by default). Every input is checked for its name, its
datatype (strictly: a float for an INT64 input is an error, never a silent cast), its
shape against the contract and the batch bound ``resources.max_batch_size``, and its
nulls against ``nullable``; the body against a size limit. Each error is an
``InvalidRequestError`` that names the problem and the input, so a server can answer
4xx with it. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from factory.contract._schema import Contract, DType, InputSpec
from factory.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["InferenceRequest", "RequestedOutput", "parse_request", "check_request", "MAX_ID_LENGTH"]

MAX_ID_LENGTH = 256
_FLOATS = (DType.FP16, DType.FP32, DType.FP64)
# The Python types a JSON value may have for each datatype (exact types: a bool is not an int).
_JSON_TYPES: dict[DType, frozenset[type]] = {
    **{d: frozenset({int, float}) for d in _FLOATS},
    **{d: frozenset({int}) for d in DType if d.name.startswith(("INT", "UINT"))},
    DType.BOOL: frozenset({bool}),
    DType.BYTES: frozenset({str}),
}
_TYPE_WORDS = {int: "a whole number", float: "a fraction", bool: "a boolean", str: "a string", list: "a list",
               dict: "an object", type(None): "null"}


@dataclass(frozen=True)
class _Plan:
    """What the check reads from a contract on every request, looked up once per contract."""

    inputs: tuple[InputSpec, ...]
    by_name: dict[str, InputSpec]
    names: list[str]
    datatypes: dict[str, str]
    outputs: list[str]
    max_batch: int


_PLANS: dict[int, tuple[Contract, _Plan]] = {}


def _plan(contract: Contract) -> _Plan:
    hit = _PLANS.get(id(contract))
    if hit is not None and hit[0] is contract:  # the contract is kept alive here, so its id is not reused
        return hit[1]
    plan = _Plan(tuple(contract.inputs), {i.name: i for i in contract.inputs}, [i.name for i in contract.inputs],
                 {i.name: str(i.dtype) for i in contract.inputs}, [o.name for o in contract.outputs],
                 contract.resources.max_batch_size)
    if len(_PLANS) >= 256:
        _PLANS.clear()
    _PLANS[id(contract)] = (contract, plan)
    return plan


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` is its ``binary_data`` parameter (None: not given)."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class InferenceRequest:
    """A checked request: its id (None when the client gave none), inputs, rows and output wishes."""

    id: str | None
    inputs: dict[str, np.ndarray]
    rows: int
    outputs: tuple[RequestedOutput, ...] = ()
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def check_request(contract: Contract, request: bytes | bytearray | memoryview | str | Mapping[str, Any], *,
                  header_length: int | None = None, max_body_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The request's inputs as ``{name: array}`` in contract order, or ``InvalidRequestError``.

    ``request`` is a raw ``infer`` body (bytes or text) or its parsed JSON object;
    ``header_length`` is the ``Inference-Header-Content-Length`` header of a binary
    body; ``max_body_bytes`` bounds a raw body (HTTP 413 above it). A null in a nullable
    float input arrives as NaN; in a nullable integer, boolean or BYTES input as a
    masked element (``numpy.ma``) or ``None``.
    """
    return parse_request(contract, request, header_length=header_length, max_body_bytes=max_body_bytes).inputs


def parse_request(contract: Contract, request: bytes | bytearray | memoryview | str | Mapping[str, Any], *,
                  header_length: int | None = None, max_body_bytes: int | None = None) -> InferenceRequest:
    """``check_request``, keeping what a server also needs: the id, the rows and the outputs asked for."""
    binary = b""
    if isinstance(request, Mapping):
        if header_length is not None:
            raise InvalidRequestError("Inference-Header-Content-Length needs a raw body, not a parsed one")
        body: Any = request
    else:
        raw = request.encode() if isinstance(request, str) else bytes(request)
        if max_body_bytes is not None and len(raw) > max_body_bytes:
            raise InvalidRequestError(
                f"the request body is {len(raw)} bytes, over the limit of {max_body_bytes} "
                "(FACTORY_SERVE_MAX_BODY_BYTES): send fewer rows per request", None, 413)
        if header_length is not None:
            if isinstance(header_length, bool) or not isinstance(header_length, int) \
                    or not 0 < header_length <= len(raw):
                raise InvalidRequestError(
                    f"Inference-Header-Content-Length is {header_length!r} but the body has {len(raw)} bytes: "
                    "give the length of the JSON header that starts the body")
            raw, binary = raw[:header_length], raw[header_length:]
        body = _parse_json(raw)
    return _check_body(contract, body, binary)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"the request body is not UTF-8 JSON ({exc.reason} at byte {exc.start}); "
                                  "send JSON, or binary tensors after an Inference-Header-Content-Length header")
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidRequestError(f"the request body is not valid JSON{where}: send an object with an 'inputs' list")


def _check_body(contract: Contract, body: Any, binary: bytes) -> InferenceRequest:
    if not isinstance(body, Mapping):
        raise InvalidRequestError(f"the request body is {_word(body)}, not a JSON object with an 'inputs' list")
    request_id = body.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID_LENGTH):
        raise InvalidRequestError(f"'id' must be a string of at most {MAX_ID_LENGTH} characters, "
                                  f"not {_word(request_id)}")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise InvalidRequestError(f"'parameters' must be an object, not {_word(parameters)}")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidRequestError("parameters.binary_data_output must be true or false")
    plan = _plan(contract)
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InvalidRequestError(f"the request needs 'inputs', a list with one entry per input {plan.names}")

    by_name: dict[str, Mapping[str, Any]] = {}
    order: list[str] = []
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, Mapping):
            raise InvalidRequestError(f"inputs[{index}] is {_word(tensor)}, not an object with name, shape, "
                                      "datatype and data")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError(f"inputs[{index}] has no 'name' string")
        if name in by_name:
            raise InvalidRequestError(f"input {name!r} is given twice: send each input once", name)
        if name not in plan.by_name:
            raise InvalidRequestError(f"unknown input {name!r}: model {contract.name!r} takes {plan.names}", name)
        by_name[name] = tensor
        order.append(name)
    if len(by_name) != len(plan.inputs):
        spec = next(i for i in plan.inputs if i.name not in by_name)
        raise InvalidRequestError(f"missing input {spec.name!r} ({spec.dtype} {list(spec.shape)}): "
                                  f"model {contract.name!r} needs every one of {plan.names}", spec.name)

    chunks = _binary_chunks(order, by_name, binary)
    rows = None
    inputs: dict[str, np.ndarray] = {}
    for spec in plan.inputs:
        tensor = by_name[spec.name]
        shape = _check_shape(spec, tensor.get("shape"), plan.max_batch)
        if rows is not None and shape[0] != rows:
            raise InvalidRequestError(f"input {spec.name!r} has {shape[0]} rows but another input has {rows}: "
                                      "every input needs the same batch size", spec.name)
        rows = shape[0]
        declared = tensor.get("datatype")
        if declared != plan.datatypes[spec.name]:
            raise InvalidRequestError(f"input {spec.name!r} is {spec.dtype} in the contract, but the request says "
                                      f"{declared!r}: send {spec.dtype} values", spec.name)
        if spec.name in chunks:
            if "data" in tensor:
                raise InvalidRequestError(f"input {spec.name!r} has both 'data' and binary_data_size: send one",
                                          spec.name)
            inputs[spec.name] = _from_binary(spec, shape, chunks[spec.name])
        else:
            inputs[spec.name] = _from_json(spec, shape, tensor.get("data"))
    return InferenceRequest(request_id, inputs, rows or 0, _requested_outputs(contract, plan, body.get("outputs")),
                            binary_output, dict(parameters))


def _check_shape(spec: InputSpec, shape: Any, max_batch: int) -> tuple[int, ...]:
    want = list(spec.shape)
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidRequestError(f"input {spec.name!r} needs 'shape', a list of non-negative whole numbers "
                                  f"like {[1, *want[1:]]}", spec.name)
    if len(shape) != len(want) or any(w != -1 and w != d for w, d in zip(want[1:], shape[1:], strict=False)):
        raise InvalidRequestError(f"input {spec.name!r} has shape {shape}; the contract wants {want} "
                                  "(-1: any size, the first dimension is the batch)", spec.name)
    if not 1 <= shape[0] <= max_batch:
        raise InvalidRequestError(f"input {spec.name!r} has {shape[0]} rows; the model takes 1 to {max_batch} "
                                  "per request (resources.max_batch_size): split the request", spec.name)
    if any(d == 0 for d in shape):
        raise InvalidRequestError(f"input {spec.name!r} has shape {shape}, with no values: send at least one",
                                  spec.name)
    return tuple(shape)


def _from_json(spec: InputSpec, shape: tuple[int, ...], data: Any) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidRequestError(f"input {spec.name!r} needs 'data', a list of its values in row-major order "
                                  "(or binary_data_size with a binary body)", spec.name)
    count = math.prod(shape)
    items = data
    if items and type(items[0]) is list:  # nested by dimension: flatten one level at a time, checking each
        for depth in range(len(shape) - 1):
            width = shape[depth + 1]
            if len(items) != math.prod(shape[:depth + 1]) or not all(
                    type(x) is list and len(x) == width for x in items):
                raise InvalidRequestError(f"input {spec.name!r}: the nested 'data' does not match shape "
                                          f"{list(shape)}; send {count} values, flat or nested by dimension",
                                          spec.name)
            items = list(chain.from_iterable(items))
    if len(items) != count:
        raise InvalidRequestError(f"input {spec.name!r} has {len(items)} values for shape {list(shape)}, which "
                                  f"holds {count}: send exactly {count}", spec.name)
    allowed = _JSON_TYPES[spec.dtype]
    found = set(map(type, items))
    nulls = type(None) in found
    if nulls and not spec.nullable:
        raise InvalidRequestError(f"input {spec.name!r} holds a null at position {items.index(None)}, but it is "
                                  "not nullable: send a value, or declare it nullable in the contract", spec.name)
    bad = found - allowed - {type(None)}
    if bad:
        value = next(v for v in items if type(v) in bad)
        raise InvalidRequestError(f"input {spec.name!r} is {spec.dtype}, but the request holds {_word(value)} "
                                  f"({_show(value)}): send {_want(spec.dtype)}", spec.name)
    return _to_array(spec, shape, items, nulls)


def _to_array(spec: InputSpec, shape: tuple[int, ...], items: list[Any], nulls: bool) -> np.ndarray:
    import numpy as np

    dtype = np.dtype(spec.dtype.numpy_name)
    if spec.dtype is DType.BYTES:
        return np.array([None if v is None else v.encode() for v in items], dtype=object).reshape(shape)
    if spec.dtype in _FLOATS:
        try:
            array = np.array([math.nan if v is None else v for v in items] if nulls else items, dtype=dtype)
        except OverflowError:
            raise InvalidRequestError(f"input {spec.name!r} is {spec.dtype}; it holds a whole number too large "
                                      "for it: send values within its range", spec.name) from None
        return _check_floats(spec, array, nulls).reshape(shape)
    mask = None
    if nulls:
        mask = np.fromiter((v is None for v in items), dtype=bool, count=len(items))
        items = [0 if v is None else v for v in items]
    try:
        array = np.array(items, dtype=dtype)
    except OverflowError:
        info = np.iinfo(dtype)
        value = next(v for v in items if not info.min <= v <= info.max)
        raise InvalidRequestError(f"input {spec.name!r} is {spec.dtype}, whose values run from {info.min} to "
                                  f"{info.max}; the request holds {value}", spec.name) from None
    if mask is not None:
        return np.ma.masked_array(array, mask=mask).reshape(shape)
    return array.reshape(shape)


def _check_floats(spec: InputSpec, array: np.ndarray, nulls_allowed: bool) -> np.ndarray:
    import numpy as np

    finite = np.isfinite(array)
    if finite.all():
        return array
    nan = np.isnan(array)
    if nan.any() and not (spec.nullable or nulls_allowed):
        raise InvalidRequestError(f"input {spec.name!r} holds NaN at position {int(np.argmax(nan.ravel()))}, "
                                  "a null, but it is not nullable: send a number", spec.name)
    if spec.dtype is not DType.FP64:
        wide = np.isinf(array) & ~nan
        if wide.any():
            raise InvalidRequestError(f"input {spec.name!r} is {spec.dtype}; the value at position "
                                      f"{int(np.argmax(wide.ravel()))} does not fit it: send values within "
                                      f"+-{float(np.finfo(array.dtype).max):.4g}", spec.name)
    return array


def _binary_chunks(order: list[str], by_name: Mapping[str, Mapping[str, Any]], binary: bytes) -> dict[str, bytes]:
    """Split the binary section among the inputs that declare binary_data_size, in request order."""
    chunks = {}
    offset = 0
    for name in order:
        parameters = by_name[name].get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise InvalidRequestError(f"input {name!r}: 'parameters' must be an object", name)
        size = parameters.get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise InvalidRequestError(f"input {name!r}: binary_data_size must be a whole number of bytes", name)
        if offset + size > len(binary):
            raise InvalidRequestError(f"input {name!r} declares {size} binary bytes, but the body holds only "
                                      f"{len(binary) - offset} more after the JSON header: check "
                                      "Inference-Header-Content-Length and binary_data_size", name)
        chunks[name] = binary[offset:offset + size]
        offset += size
    if offset != len(binary):
        raise InvalidRequestError(f"the body has {len(binary) - offset} bytes after the JSON header that no input "
                                  "claims: check Inference-Header-Content-Length and each binary_data_size")
    return chunks


def _from_binary(spec: InputSpec, shape: tuple[int, ...], chunk: bytes) -> np.ndarray:
    import numpy as np

    count = math.prod(shape)
    if spec.dtype is DType.BYTES:
        return _bytes_elements(spec, shape, chunk, count)
    dtype = np.dtype(spec.dtype.numpy_name).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise InvalidRequestError(f"input {spec.name!r} sends {len(chunk)} binary bytes; shape {list(shape)} of "
                                  f"{spec.dtype} takes {count * dtype.itemsize}", spec.name)
    if spec.dtype is DType.BOOL:
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if (raw > 1).any():
            raise InvalidRequestError(f"input {spec.name!r} is BOOL: its binary bytes must be 0 or 1", spec.name)
        return raw.astype(bool).reshape(shape)
    array = np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)
    if spec.dtype in _FLOATS:
        _check_floats(spec, array, False)
    return array.reshape(shape)


def _bytes_elements(spec: InputSpec, shape: tuple[int, ...], chunk: bytes, count: int) -> np.ndarray:
    """BYTES in the binary extension: each element is a 4-byte little-endian length, then its bytes."""
    import numpy as np

    out = []
    offset = 0
    view = memoryview(chunk)
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            break
        size = int.from_bytes(view[offset:offset + 4], "little")
        offset += 4
        if offset + size > len(chunk):
            break
        out.append(bytes(view[offset:offset + size]))
        offset += size
    if offset != len(chunk) or len(out) != count:
        raise InvalidRequestError(f"input {spec.name!r}: the binary BYTES data does not hold {count} "
                                  "length-prefixed elements", spec.name)
    return np.array(out, dtype=object).reshape(shape)


def _requested_outputs(contract: Contract, plan: _Plan, outputs: Any) -> tuple[RequestedOutput, ...]:
    if outputs is None:
        return ()
    if not isinstance(outputs, list):
        raise InvalidRequestError("'outputs' must be a list of {name, parameters} objects")
    known = plan.outputs
    out = []
    for index, item in enumerate(outputs):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str):
            raise InvalidRequestError(f"outputs[{index}] needs a 'name' string")
        if name not in known:
            raise InvalidRequestError(f"unknown output {name!r}: model {contract.name!r} returns {known}")
        parameters = item.get("parameters") or {}
        binary = parameters.get("binary_data") if isinstance(parameters, Mapping) else None
        if binary is not None and not isinstance(binary, bool):
            raise InvalidRequestError(f"output {name!r}: binary_data must be true or false")
        out.append(RequestedOutput(name, binary))
    return tuple(out)


def _word(value: Any) -> str:
    return _TYPE_WORDS.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _want(dtype: DType) -> str:
    if dtype in _FLOATS:
        return "numbers"
    if dtype is DType.BOOL:
        return "true or false"
    if dtype is DType.BYTES:
        return "strings"
    return "whole numbers"
