"""Model servers on Ray Serve: the Open Inference Protocol, checked against each package's contract.

Each served model is a Ray Serve application at ``/v2/models/<name>`` whose replicas hold
several versions of it, route between them in-process, batch as the contract says, log
a sampled share of requests to the store's feature log and export Prometheus metrics.
What a replica serves lives in the store (a deployment record and the environment's
ref), so a new version or a traffic split reaches every replica without a restart.
Importing this package imports neither Ray nor torch; they load where they are used
(the Serve deployments live in ``_app``, imported when deploying).
"""

from __future__ import annotations

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
    "check_env",
    "check_name",
    "proxy_middlewares",
    "ReplicaLossRetry",
    "PROXY_CALLBACK",
    "PROXY_CALLBACK_ENV",
]

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
from factory.serve._proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV, ReplicaLossRetry, proxy_middlewares
from factory.serve._record import (
    ROOT_APP,
    DeploymentRecord,
    ServeState,
    check_env,
    check_name,
    env_ref,
    read_record,
    read_state,
    record_ref,
    set_traffic,
)
from factory.serve._server import ROUTE_KEY, ModelServer
from factory.serve._traffic import choose, version_of
from factory.serve._versions import LoadedVersion, Routing, VersionPool
