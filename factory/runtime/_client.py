"""Running pipelines from a client: resolve the pipeline here (files, refs, code digests are
read where it is submitted), hand the plan to the controller, wait on the store.

::

    from factory.runtime import Pipeline, run_pipeline

    status = run_pipeline(pipeline, store=store)      # waits; raises PipelineFailedError on failure
    status.outputs("train")["model"]

``controller="actor"`` (default) uses the store's controller actor on the connected Ray cluster
(created if missing); ``controller=Controller(...)`` uses a controller in this process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from factory.runtime._plan import Plan, resolve
from factory.runtime._spec import PipelineSpec, load_pipeline, parse_pipeline
from factory.runtime._status import PipelineStatus, wait_pipeline

if TYPE_CHECKING:
    from factory.runtime._controller import Controller
    from factory.runtime.pipeline import Pipeline
    from factory.store import Store

__all__ = ["plan_pipeline", "submit_pipeline", "run_pipeline", "cancel_pipeline"]



def plan_pipeline(store: Store, pipeline: Any) -> Plan:
    """``pipeline`` (a ``Pipeline``, a ``PipelineSpec``, a YAML path or plain data) resolved to digests."""
    base_dir = None
    if isinstance(pipeline, str | os.PathLike):
        base_dir = os.path.dirname(os.path.abspath(os.fspath(pipeline)))
        spec = load_pipeline(pipeline)
    elif isinstance(pipeline, PipelineSpec):
        spec = pipeline
    elif hasattr(pipeline, "spec") and callable(pipeline.spec):
        spec = pipeline.spec()
    else:
        spec = parse_pipeline(pipeline)
    return resolve(store, spec, base_dir=base_dir)


def submit_pipeline(pipeline: Any, *, store: Store, request_id: str | None = None,
                    controller: Controller | str = "actor") -> str:
    """Start ``pipeline``; its run id. The same ``request_id`` again returns the same run."""
    plan = plan_pipeline(store, pipeline)
    request_id = request_id or uuid.uuid4().hex
    if not isinstance(controller, str):
        return controller.submit(plan, request_id)
    import ray

    from factory.runtime._actor import get_controller

    handle = get_controller(store)
    return ray.get(handle.submit.remote(plan.model_dump(mode="json"), request_id))


def run_pipeline(pipeline: Any, *, store: Store, request_id: str | None = None, controller: Controller | str = "actor",
                 timeout_s: float | None = None, on_change: Callable[[PipelineStatus], None] | None = None,
                 check: bool = True) -> PipelineStatus:
    """Submit ``pipeline`` and wait for it to end; with ``check``, a failed or cancelled run raises
    ``PipelineFailedError`` naming the step and its error."""
    run_id = submit_pipeline(pipeline, store=store, request_id=request_id, controller=controller)
    status = wait_pipeline(store, run_id, timeout_s=timeout_s, on_change=on_change)
    return status.require() if check else status


def cancel_pipeline(run_id: str, *, store: Store, reason: str = "", controller: Controller | str = "actor") -> str:
    """Cancel the pipeline run ``run_id``; its state afterwards."""
    by = store.settings.actor
    if not isinstance(controller, str):
        return controller.cancel(run_id, by=by, reason=reason)
    import ray

    from factory.runtime._actor import get_controller

    return ray.get(get_controller(store).cancel.remote(run_id, by, reason))
