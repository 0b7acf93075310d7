"""Model servers on Ray Serve: the Open Inference Protocol, checked against each package's contract.

Each served model is a Ray Serve application at ``/v2/models/<name>`` whose replicas hold
several versions of it, route between them in-process, batch as the contract says, log
a sampled share of requests to the store's feature log and export Prometheus metrics.
What a replica serves lives in the store (a deployment record and the environment's
ref), so a new version or a traffic split reaches every replica without a restart.
Importing this package imports neither Ray nor torch; they load where they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "deploy",
    "undeploy",
    "deployments",
    "ensure_serve",
    "serve_url",
    "example_request",
    "package_contract",
    "Deployed",
    "DeploymentStatus",
    "DeploymentRecord",
    "ServeState",
    "read_record",
    "read_state",
    "set_traffic",
    "env_ref",
    "record_ref",
    "choose",
    "version_of",
    "ModelServer",
    "LoadedVersion",
    "Routing",
    "VersionPool",
    "InferenceLog",
    "LogRecord",
    "ServeMetrics",
    "MemoryRecorder",
    "RayRecorder",
    "require_admitted",
    "load_version",
    "openapi",
    "ROOT_APP",
    "ROUTE_KEY",
]

_WHERE = {
    "deploy": "_deploy",
    "undeploy": "_deploy",
    "deployments": "_deploy",
    "ensure_serve": "_deploy",
    "serve_url": "_deploy",
    "example_request": "_deploy",
    "package_contract": "_deploy",
    "Deployed": "_deploy",
    "DeploymentStatus": "_deploy",
    "DeploymentRecord": "_record",
    "ServeState": "_record",
    "read_record": "_record",
    "read_state": "_record",
    "set_traffic": "_record",
    "env_ref": "_record",
    "record_ref": "_record",
    "ROOT_APP": "_record",
    "choose": "_traffic",
    "version_of": "_traffic",
    "ModelServer": "_server",
    "ROUTE_KEY": "_server",
    "LoadedVersion": "_versions",
    "Routing": "_versions",
    "VersionPool": "_versions",
    "InferenceLog": "_log",
    "LogRecord": "_log",
    "ServeMetrics": "_metrics",
    "MemoryRecorder": "_metrics",
    "RayRecorder": "_metrics",
    "require_admitted": "_admission",
    "load_version": "_admission",
    "openapi": "_openapi",
}

if TYPE_CHECKING:
    from factory.serve._admission import load_version, require_admitted
    from factory.serve._deploy import (
        Deployed,
        DeploymentStatus,
        deploy,
        deployments,
        ensure_serve,
        example_request,
        package_contract,
        serve_url,
        undeploy,
    )
    from factory.serve._log import InferenceLog, LogRecord
    from factory.serve._metrics import MemoryRecorder, RayRecorder, ServeMetrics
    from factory.serve._openapi import openapi
    from factory.serve._record import (
        ROOT_APP,
        DeploymentRecord,
        ServeState,
        env_ref,
        read_record,
        read_state,
        record_ref,
        set_traffic,
    )
    from factory.serve._server import ROUTE_KEY, ModelServer
    from factory.serve._traffic import choose, version_of
    from factory.serve._versions import LoadedVersion, Routing, VersionPool


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'factory.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"factory.serve.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
