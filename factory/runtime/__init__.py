"""The runtime layer: the controller, pipelines, experiments and the command line.

Pipelines: ``Pipeline`` (Python) or YAML (``load_pipeline``), run by ``run_pipeline`` /
``submit_pipeline`` through the store's controller (``get_controller``: a detached Ray actor),
or by a ``Controller`` in this process. ``pipeline_status`` / ``wait_pipeline`` read a run
from the store alone.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Pipeline",
    "Step",
    "StepOutput",
    "PipelineSpec",
    "StepSpec",
    "Resources",
    "RuntimeEnv",
    "load_pipeline",
    "parse_pipeline",
    "Plan",
    "resolve",
    "plan_pipeline",
    "submit_pipeline",
    "run_pipeline",
    "cancel_pipeline",
    "PipelineStatus",
    "StepProgress",
    "pipeline_status",
    "wait_pipeline",
    "pipeline_runs",
    "Controller",
    "CONTROLLER_ACTOR",
    "get_controller",
    "controller_name",
    "StepContext",
    "sample_dataset",
    "Experiment",
    "start_experiment",
    "get_experiment",
    "list_experiments",
]

_WHERE = {
    "Pipeline": "pipeline", "Step": "pipeline", "StepOutput": "_spec", "PipelineSpec": "_spec", "StepSpec": "_spec",
    "Resources": "_spec", "RuntimeEnv": "_spec", "load_pipeline": "_spec", "parse_pipeline": "_spec",
    "Plan": "_plan", "resolve": "_plan", "plan_pipeline": "_client", "submit_pipeline": "_client",
    "run_pipeline": "_client", "cancel_pipeline": "_client", "PipelineStatus": "_status",
    "StepProgress": "_progress", "pipeline_status": "_status", "wait_pipeline": "_status",
    "pipeline_runs": "_status", "Controller": "_controller", "CONTROLLER_ACTOR": "_controller",
    "get_controller": "_actor", "controller_name": "_actor", "StepContext": "_task", "sample_dataset": "_sample",
    "Experiment": "experiment", "start_experiment": "experiment", "get_experiment": "experiment",
    "list_experiments": "experiment",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'factory.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"factory.runtime.{where}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
