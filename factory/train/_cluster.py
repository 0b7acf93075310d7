"""Connecting to Ray, and the Ray settings a training job needs while it is submitted."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

__all__ = ["connect", "report_interval"]

log = logging.getLogger(__name__)

_HEALTH_CHECK = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Train's controller polls its workers every 2 s by default and each report waits for
# the poll; epochs of a few seconds would spend most of their time waiting.
_REPORT_INTERVAL_S = "0.2"


def connect(address: str | None = None, *, num_cpus: float | None = None, dashboard: bool = False,
            object_store_mb: int | None = None) -> bool:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one.

    Returns whether this call started or joined Ray (so the caller knows to shut it
    down). A sweep needs the dashboard process: Ray Train uses the State API to clean
    up a finished trial's placement groups.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, object] = {"configure_logging": False, "log_to_driver": False}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **kwargs)
        return True
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if object_store_mb is not None:
        kwargs["object_store_memory"] = object_store_mb * 2**20
    ray.init(include_dashboard=dashboard, **kwargs)
    return True


@contextlib.contextmanager
def report_interval() -> Iterator[None]:
    """Lower Ray Train's controller poll while a trainer starts, unless the user set it.

    Ray Train copies the variable into its controller's environment when ``fit`` starts.
    """
    if _HEALTH_CHECK in os.environ:
        yield
        return
    os.environ[_HEALTH_CHECK] = _REPORT_INTERVAL_S
    try:
        yield
    finally:
        os.environ.pop(_HEALTH_CHECK, None)
