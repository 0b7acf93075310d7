"""The OpenAPI description of the OIP endpoints, served at ``/v2/openapi.json``.

It describes the protocol, not one model: ``model_name`` is any served name, and an
``infer`` body is the V2 request shape. Clients and fuzzers (schemathesis) read it.
"""

from __future__ import annotations

from typing import Any

from factory._version import __version__

__all__ = ["openapi"]

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "id": {"type": "string"}}}
_TENSOR_META = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string"}, "datatype": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer"}}}}
_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
              "FP64", "BYTES"]
_INPUT = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": _DATATYPES},
    "parameters": {"type": "object"},
    "data": {"type": "array", "items": {}},
}}
_INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"},
    "parameters": {"type": "object"},
    "inputs": {"type": "array", "items": _INPUT},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "parameters": {"type": "object"}}}},
}}
_INFER_RESPONSE = {"type": "object", "required": ["model_name", "id", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "parameters": {"type": "object"},
    "outputs": {"type": "array", "items": {**_TENSOR_META, "properties": {
        **_TENSOR_META["properties"], "data": {"type": "array"}, "parameters": {"type": "object"}}}},
}}
_OUTCOME = {"type": "object", "required": ["id"], "properties": {
    "id": {"type": "string", "description": "the id of the request whose outcome this is"},
    "label": {"description": "the observed class (or one per row)"},
    "value": {"description": "the observed number (or one per row)"}}}
_MODEL_META = {"type": "object", "required": ["name", "platform", "inputs", "outputs"], "properties": {
    "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
    "platform": {"type": "string"},
    "inputs": {"type": "array", "items": _TENSOR_META}, "outputs": {"type": "array", "items": _TENSOR_META}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "a request the contract refuses", 404: "no such model, version or request id", 405: "wrong method",
             413: "body over the size limit", 415: "unsupported Content-Encoding", 503: "not ready"}
    return {str(c): _json(_ERROR, words[c]) for c in codes}


def _model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        prefix: {"get": {"summary": "Model metadata (from its contract)", "parameters": params,
                         "responses": {"200": _json(_MODEL_META, "model metadata"), **_errors(404)}}},
        f"{prefix}/ready": {"get": {"summary": "Model readiness", "parameters": params, "responses": {
            "200": _json({"type": "object"}, "ready"), **_errors(404, 503)}}},
        f"{prefix}/infer": {"post": {
            "summary": "Inference", "parameters": params,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _INFER_REQUEST}}},
            "responses": {"200": _json(_INFER_RESPONSE, "outputs"), **_errors(400, 404, 413, 415)}}},
    }


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the OIP endpoints."""
    name = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "factory model servers (Open Inference Protocol v2)", "version": __version__},
        "paths": {
            "/v2": {"get": {"summary": "Server metadata", "responses": {"200": _json(
                {"type": "object", "required": ["name", "version", "extensions"]}, "server metadata")}}},
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"},
                                                                                          "live")}}},
            "/v2/health/ready": {"get": {"summary": "Readiness: every served model is running", "responses": {
                "200": _json({"type": "object"}, "ready"), **_errors(503)}}},
            **_model_paths("/v2/models/{model_name}", [name]),
            **_model_paths("/v2/models/{model_name}/versions/{model_version}", [name, version]),
            "/v2/models/{model_name}/outcomes": {"post": {
                "summary": "Report what really happened to an answered request (scores the version that answered)",
                "parameters": [name],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _OUTCOME}}},
                "responses": {"200": _json({"type": "object"}, "the outcome as scored"), **_errors(400, 404, 413)}}},
        },
    }
