"""The controller as a Ray actor: one per store, detached, named, in the ``factory`` namespace,
pinned to the head node and restarted when it dies. A thin shell over ``Controller``: every
method is a command the controller makes idempotent, so Ray may retry it after a restart."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from factory.errors import ControllerUnavailableError

if TYPE_CHECKING:
    from factory.settings import Settings
    from factory.store import Store

__all__ = ["ControllerActor", "controller_name", "get_controller", "CONTROLLER_NAMESPACE", "HEAD_RESOURCE"]

log = logging.getLogger(__name__)

CONTROLLER_NAMESPACE = "factory"
HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has it; a tiny share pins an actor there


def controller_name(store: Store) -> str:
    """The controller's actor name for ``store``: one controller per store home and catalog."""
    where = f"{store.home}\0{store.settings.catalog or ''}"
    return "factory-controller-" + hashlib.sha256(where.encode()).hexdigest()[:12]


class ControllerActor:
    """The actor's class (Ray wraps it in ``get_controller``)."""

    def __init__(self, settings: Settings):
        from factory.runtime._controller import CONTROLLER_ACTOR, Controller
        from factory.runtime._launch import RayLauncher
        from factory.store import Store

        settings = replace(settings, actor=CONTROLLER_ACTOR)
        self.store = Store(settings.home, settings=settings)
        self.controller = Controller(self.store, launchers={"task": RayLauncher()})
        self.resumed = self.controller.start()

    def submit(self, plan: dict[str, Any], request_id: str) -> str:
        return self.controller.submit(plan, request_id)

    def cancel(self, run_id: str, by: str, reason: str = "") -> str:
        return self.controller.cancel(run_id, by=by, reason=reason)

    def hosted(self) -> dict[str, list[str]]:
        return self.controller.hosted()

    def info(self) -> dict[str, Any]:
        import os

        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "home": self.store.home,
                "resumed": list(self.resumed), **self.controller.hosted()}


def get_controller(store: Store, *, max_restarts: int = -1) -> Any:
    """The controller actor of ``store``: found, or created detached on the head node. Ray must be
    connected (``ray.init``); the actor outlives this process."""
    import ray

    if not ray.is_initialized():
        raise ControllerUnavailableError("Ray is not connected: call ray.init() (or set RAY_ADDRESS) before "
                                         "reaching the controller")
    actor = ray.remote(ControllerActor)
    try:
        return actor.options(
            name=controller_name(store), namespace=CONTROLLER_NAMESPACE, lifetime="detached", get_if_exists=True,
            max_restarts=max_restarts, max_task_retries=-1, max_concurrency=8, num_cpus=0,
            resources={HEAD_RESOURCE: 0.001},
        ).remote(store.settings)
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds when the cluster is going away
        raise ControllerUnavailableError(f"cannot create or find the controller: {exc}") from exc
