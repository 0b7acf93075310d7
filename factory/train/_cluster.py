"""Connecting to Ray, and the Ray settings a training job needs while it is submitted."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

__all__ = ["connect", "state_api_env", "warm_up", "report_interval"]

log = logging.getLogger(__name__)

_HEALTH_CHECK = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Train's controller polls its workers every 2 s by default and each report waits for
# the poll; epochs of a few seconds would spend most of their time waiting.
_REPORT_INTERVAL_S = "0.2"
_RAY_ADDRESS = "RAY_ADDRESS"
_API_SERVER = "RAY_API_SERVER_ADDRESS"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_api_env(address: str | None) -> dict[str, str]:
    """The environment that points Ray's State API at the cluster at ``address``.

    Ray Train's placement group cleaner (a detached actor of every trainer) asks the
    State API whether its controller is alive, and without ``RAY_ADDRESS`` the State
    API looks for the one Ray instance on the machine: where several run, it fails,
    or finds another cluster's, and a trial that ASHA stops leaks its placement group.
    Given to the job's runtime environment, every process of the job, the cleaner
    included, knows its own cluster. ``{}`` for a Ray Client address (``ray://``), or
    an address that does not resolve.
    """
    if address is not None and "://" in address:
        return {}
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die

        resolved = canonicalize_bootstrap_address_or_die(address)
    except Exception as exc:  # Ray says why when ray.init fails on the same address
        log.debug("cannot resolve the Ray address %r for the State API: %s", address, exc)
        return {}
    return {_RAY_ADDRESS: resolved}


def connect(address: str | None = None, *, num_cpus: float | None = None, dashboard: bool = False,
            object_store_mb: int | None = None) -> bool:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one.

    Returns whether this call started or joined Ray (so the caller knows to shut it
    down). A sweep needs the dashboard process: Ray Train uses the State API to clean
    up a finished trial's placement groups, and the job's processes are told which
    cluster's State API to ask (``state_api_env``). When Ray is already connected, the
    caller's connection (and its environment) is used as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, object] = {"configure_logging": False, "log_to_driver": False}
    target = address or os.environ.get(_RAY_ADDRESS)
    if target:
        env = state_api_env(target)
    else:
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        if object_store_mb is not None:
            kwargs["object_store_memory"] = object_store_mb * 2**20
        kwargs["include_dashboard"] = dashboard
        env = {}
        if dashboard:
            # The cluster's address is known only once it runs; its dashboard's can be chosen first.
            port = _free_port()
            kwargs.update(dashboard_host="127.0.0.1", dashboard_port=port)
            env = {_API_SERVER: f"http://127.0.0.1:{port}"}
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    try:
        ray.init(address=address if target else "local", **kwargs)
    except ValueError as exc:
        if "runtime env" not in str(exc) or "runtime_env" not in kwargs:
            raise
        # A submitted job whose runtime env sets the same variables: theirs stand.
        kwargs.pop("runtime_env")
        ray.init(address=address if target else "local", **kwargs)
    return True


def warm_up() -> None:
    """Start, without waiting, the cluster-wide actor Ray Train's controller calls first.

    The controller's first act is a resource request to Ray's autoscaling coordinator
    (a detached actor, made on first use), and it waits up to 5 s for each attempt, so
    on a fresh cluster it waits for that actor's process to start. Asked for here, the
    process starts while the driver records the run and builds the trainer. Nothing
    depends on it: where Ray has moved the function, this does nothing.
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )

        get_or_create_autoscaling_coordinator()
    except Exception as exc:  # an optimisation only
        log.debug("did not start Ray's autoscaling coordinator ahead of the trainer: %s", exc)


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
