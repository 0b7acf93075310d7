"""The Open Inference Protocol (KServe V2 REST) on the wire: paths, responses, errors.

Pure functions of bytes and arrays, so the server's behaviour is unit-tested without
Ray. Requests are parsed and checked by ``factory.contract.parse_request``; this
module writes what goes back: JSON outputs in row-major ``data``, or the binary tensor
extension (``Inference-Header-Content-Length``) that ``tritonclient.http`` asks for.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory._version import __version__
from factory.contract import DType
from factory.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

    from factory.contract import Contract, InferenceRequest

__all__ = ["Reply", "Route", "parse_route", "json_reply", "error_reply", "infer_reply", "server_metadata",
           "decode_body", "HEADER_LENGTH", "EXTENSIONS"]

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data",)
_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<verb>ready|infer|outcomes))?/?$")


@dataclass(frozen=True)
class Reply:
    """What a server sends back: status, body and headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


@dataclass(frozen=True)
class Route:
    """A model path: ``verb`` is ``metadata``, ``ready``, ``infer`` or ``outcomes``; ``version`` None means the default."""

    model: str
    version: str | None
    verb: str


def parse_route(path: str) -> Route | None:
    """The model route of ``path`` (``/v2/models/{name}[/versions/{v}][/ready|/infer|/outcomes]``), or None."""
    match = _ROUTE.match(path)
    if match is None:
        return None
    return Route(match["name"], match["version"], match["verb"] or "metadata")


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def json_reply(status: int, value: Any) -> Reply:
    return Reply(status, _ENCODER.encode(value).encode())


def error_reply(status: int, message: str, request_id: str | None = None) -> Reply:
    """The OIP error body ``{"error": ...}``, with the request id when there is one."""
    body: dict[str, Any] = {"error": message}
    if request_id is not None:
        body["id"] = request_id
    return json_reply(status, body)


def server_metadata() -> dict[str, Any]:
    """The body of ``GET /v2``."""
    return {"name": "factory", "version": __version__, "extensions": list(EXTENSIONS)}


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its ``Content-Encoding`` (gzip or deflate) undone, never inflated past ``limit``."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidRequestError(f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or none",
                                  None, 415)
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequestError(f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidRequestError(f"the request body inflates to more than {limit} bytes "
                                  "(FACTORY_SERVE_MAX_BODY_BYTES): send fewer rows per request", None, 413)
    return out


def infer_reply(name: str, version: str, request: InferenceRequest, request_id: str,
                outputs: Mapping[str, np.ndarray], contract: Contract) -> Reply:
    """The ``infer`` response: the asked-for outputs (all by default), as JSON or binary tensors."""
    datatypes = {o.name: o.dtype for o in contract.outputs}
    wanted = [(o.name, o.binary) for o in request.outputs] if request.outputs else [(n, None) for n in datatypes]
    entries = []
    chunks: list[bytes] = []
    for output, binary in wanted:
        dtype = datatypes[output]
        array = outputs[output]
        entry: dict[str, Any] = {"name": output, "datatype": dtype.value, "shape": list(array.shape)}
        if request.binary_output if binary is None else binary:
            raw = _binary(array, dtype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(array, dtype)
        entries.append(entry)
    text = _ENCODER.encode({"model_name": name, "model_version": version, "id": request_id,
                            "outputs": entries}).encode()
    if not chunks:
        return Reply(200, text)
    return Reply(200, text + b"".join(chunks),
                 {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(text))})


def _json_data(array: np.ndarray, dtype: DType) -> list[Any]:
    import numpy as np

    flat = array.ravel()
    if dtype is DType.BYTES:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat.tolist()]
    values = flat.tolist()
    if dtype in (DType.FP16, DType.FP32, DType.FP64) and not np.isfinite(flat).all():
        # JSON has no NaN or infinity: a non-finite output travels as null.
        values = [v if np.isfinite(v) else None for v in values]
    return values


def _binary(array: np.ndarray, dtype: DType) -> bytes:
    import numpy as np

    if dtype is DType.BYTES:
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
        return b"".join(len(v).to_bytes(4, "little") + v for v in items)
    want = np.dtype(dtype.numpy_name).newbyteorder("<")
    return np.ascontiguousarray(array, dtype=want).tobytes()
