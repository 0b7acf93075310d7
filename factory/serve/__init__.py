"""Serving: model servers, and progressive delivery between their versions.

Progressive delivery (routing, shadows, rollouts) is plain logic here, without Ray: the
router decides per request which version answers and which get a shadow copy; the
``Shadower`` runs copies off the response path and compares replies; a ``Rollout``
takes a candidate through shadow and canary steps on measured ``Signals`` (in-process
or from Prometheus) to promotion or rollback, recorded as a run in the store.
Importing this package imports neither Ray nor torch.
"""

from __future__ import annotations

# Progressive delivery (issue 14).
__all__ = [
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
    "version_of",
    "EVIDENCE_KIND",
    "RUN_KIND",
]

from factory.serve._analysis import Analysis, Check, Verdict, analyse
from factory.serve._outcomes import OutcomeBook, parse_outcome
from factory.serve._promql import MetricNames, PrometheusSignals
from factory.serve._rollout import RUN_KIND, Rollout
from factory.serve._rollout_config import RolloutConfig, RolloutSpec, parse_duration, parse_steps, version_of
from factory.serve._rollout_host import drive, operate, promote_by_hand, take_over
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
from factory.serve._signals import LATENCY_BUCKETS_MS, MemorySignals, Signals, VersionFigures, bucket_quantile
from factory.serve._traffic_control import MemoryTraffic, TrafficControl
