"""Serving: model servers on Ray Serve, and progressive delivery between their versions.

Each served model is a Ray Serve application at ``/v2/models/<name>`` speaking the Open
Inference Protocol, whose replicas hold several versions of it, route between them
in-process, batch as the contract says, log a sampled share of requests to the store's
feature log and export Prometheus metrics. What a replica serves lives in the store (a
deployment record and the environment's ref), so a new version or a traffic split
reaches every replica without a restart.

Progressive delivery (routing, shadows, rollouts) is plain logic, without Ray: the router
decides per request which version answers and which get a shadow copy; the ``Shadower``
runs copies off the response path and compares replies; a ``Rollout`` takes a candidate
through shadow and canary steps on measured ``Signals`` to promotion or rollback,
recorded as a run in the store. On a cluster, the replicas route with that router
inside the ingress replica, a rollout's traffic reaches them through their deployment
record (``ServeTraffic``), and its signals come from the cluster's collector that every
replica reports to (``ClusterSignals``) or from Prometheus (``PrometheusSignals``).

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
    "version_of",
    "split",
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
    # Progressive delivery (issue 14).
    "TrafficConfig",
    "StickyKey",
    "RouteRequest",
    "Decision",
    "Router",
    "route",
    "Shadower",
    "ShadowStats",
    "Comparison",
    "compare_outputs",
    "answer",
    "Signals",
    "VersionFigures",
    "MemorySignals",
    "PrometheusSignals",
    "MetricNames",
    "SIGNAL_METRICS",
    "RecorderSink",
    "ClientRecorder",
    "FanOut",
    "LATENCY_BUCKETS_MS",
    "bucket_quantile",
    "OutcomeBook",
    "parse_outcome",
    "RolloutConfig",
    "RolloutSpec",
    "Rollout",
    "RolloutState",
    "RolloutStatus",
    "RolloutMetrics",
    "Analysis",
    "Check",
    "Verdict",
    "analyse",
    "TrafficControl",
    "MemoryTraffic",
    "ServeTraffic",
    "served_in",
    "ClusterSignals",
    "SignalsCollector",
    "ServedAs",
    "serving_parts",
    "rollout_spec",
    "start_rollout",
    "TicketRequest",
    "TicketSink",
    "StoreTickets",
    "Command",
    "post_command",
    "read_commands",
    "drive",
    "operate",
    "promote_by_hand",
    "take_over",
    "rollout_status",
    "rollouts",
    "find_rollout",
    "replay",
    "parse_duration",
    "parse_steps",
    "EVIDENCE_KIND",
    "RUN_KIND",
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
from factory.serve._traffic import split, version_of
from factory.serve._versions import LoadedVersion, Routing, VersionPool

from factory.serve._analysis import Analysis, Check, Verdict, analyse
from factory.serve._outcomes import OutcomeBook, parse_outcome
from factory.serve._promql import MetricNames, PrometheusSignals
from factory.serve._rollout import RUN_KIND, Rollout
from factory.serve._rollout_config import RolloutConfig, RolloutSpec, parse_duration, parse_steps
from factory.serve._collector import ClusterSignals, SignalsCollector
from factory.serve._rollout_host import (
    drive,
    operate,
    promote_by_hand,
    rollout_spec,
    serving_parts,
    start_rollout,
    take_over,
)
from factory.serve._rollout_metrics import RolloutMetrics
from factory.serve._rollout_state import RolloutState, replay
from factory.serve._rollout_status import RolloutStatus, find_rollout, rollout_status, rollouts
from factory.serve._rollout_store import (
    EVIDENCE_KIND,
    Command,
    StoreTickets,
    TicketRequest,
    TicketSink,
    post_command,
    read_commands,
)
from factory.serve._router import Decision, RouteRequest, Router, StickyKey, TrafficConfig, route
from factory.serve._shadow import Comparison, Shadower, ShadowStats, answer, compare_outputs
from factory.serve._signal_metrics import SIGNAL_METRICS, ClientRecorder, FanOut, RecorderSink
from factory.serve._signals import (
    LATENCY_BUCKETS_MS,
    MemorySignals,
    ServedAs,
    Signals,
    VersionFigures,
    bucket_quantile,
)
from factory.serve._traffic_control import MemoryTraffic, ServeTraffic, TrafficControl, served_in
