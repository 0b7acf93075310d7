"""Hosting a rollout: the loop that ticks it, and operators' actions from any process.

``drive`` is the host's loop: apply queued commands, tick, sleep, until the rollout ends
or ``stop`` is set. ``start_rollout`` begins one against what serves the environment
now, with ``serving_parts``: the model servers' traffic control (the deployment
records every replica follows) and their signals (the cluster's collector, or a
Prometheus server). Both are plain functions: ``factory rollout start`` hosts a
rollout in its own process, and the controller can host the same in its actor.

``operate`` and ``promote_by_hand`` are what ``factory rollout pause|resume``,
``factory rollback`` and ``factory promote`` do. When a live host owns the rollout's run,
the action is queued for it (``post_command``) and carried out at its next tick. When
none does (the run reads ``interrupted``), this process takes the run over, which
first sets traffic back to the last passed stage, and acts itself. A manual promotion
always moves the environment's ref as the operator's own actor, so the ref's rule
decides who may promote, whoever hosts the rollout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, NotFoundError, RefConflictError, RefProtectedError
from factory.serve._rollout import RUN_KIND, Rollout
from factory.serve._rollout_config import RolloutConfig, RolloutSpec
from factory.serve._rollout_store import post_command, read_commands

if TYPE_CHECKING:
    from factory.serve._rollout_state import RolloutState
    from factory.store import Run, Store

__all__ = ["drive", "operate", "promote_by_hand", "take_over", "serving_parts", "rollout_spec", "start_rollout"]

_ENDED_RUN = ("succeeded", "failed", "cancelled")


def drive(rollout: Rollout, *, tick_s: float = 1.0, stop: threading.Event | None = None,
          on_tick: Callable[[Rollout], None] | None = None) -> RolloutState:
    """Tick ``rollout`` every ``tick_s`` until it ends or ``stop`` is set; apply queued commands first."""
    stop = stop or threading.Event()
    while not rollout.state.ended and not stop.is_set():
        for command in read_commands(rollout.store, rollout.run.id, rollout.state.commands):
            rollout.apply(command)
        rollout.tick()
        if on_tick is not None:
            on_tick(rollout)
        if not rollout.state.ended:
            stop.wait(tick_s)
    return rollout.state


def serving_parts(store: Store, spec: RolloutSpec | Mapping[str, Any], *, prometheus: str | None = None,
                  tickets: Any = None) -> dict[str, Any]:
    """What a rollout of ``spec`` talks to on a live cluster: traffic through the deployment records of its
    environment, signals from the cluster's collector (a connected Ray), or from ``prometheus`` when given.

    Refused when no deployment serves the model in the environment, or more than one does
    (a rollout judges one deployment's traffic).
    """
    from factory.serve._collector import ClusterSignals
    from factory.serve._promql import PrometheusSignals
    from factory.serve._signals import ServedAs
    from factory.serve._traffic_control import ServeTraffic, served_in

    spec = spec if isinstance(spec, RolloutSpec) else RolloutSpec.model_validate(spec)
    records = served_in(store, spec.model, spec.env)
    if not records:
        raise NotFoundError(f"no deployment serves {spec.model} in {spec.env}, so a rollout has no traffic to move: "
                            f"deploy what {spec.env_ref} points at first ('factory serve deploy {spec.incumbent} "
                            f"--env {spec.env}')")
    if len(records) > 1:
        names = ", ".join(r.name for r in records)
        raise InvalidInputError(f"several deployments serve {spec.model} in {spec.env} ({names}): a rollout judges "
                                "one deployment's traffic; delete the others ('factory serve delete NAME') first")
    source = PrometheusSignals(prometheus) if prometheus else ClusterSignals()
    parts: dict[str, Any] = {"traffic": ServeTraffic(store, spec.env, [spec.candidate, spec.incumbent]),
                             "signals": ServedAs(source, {spec.model: records[0].name})}
    if tickets is not None:
        parts["tickets"] = tickets
    return parts


def rollout_spec(store: Store, candidate: str, env: str, config: RolloutConfig | None = None) -> RolloutSpec:
    """The spec of rolling package ``candidate`` out against what ``model/<name>/<env>`` serves now.

    The candidate must be admitted to ``env`` (its replicas check again before they load
    it); the p99 bound is the config's, else the candidate's contract's.
    """
    from factory.contract import open_package
    from factory.serve._admission import require_admitted
    from factory.serve._record import check_env, env_ref

    env = check_env(env)
    candidate = store.artifacts.resolve(candidate)
    contract = open_package(store, candidate).contract
    ref = env_ref(contract.name, env)
    incumbent = store.refs.get(ref)
    if incumbent is None:
        raise NotFoundError(f"{ref} is not set, so there is nothing to roll out against: deploy a first version "
                            f"with 'factory serve deploy DIGEST --env {env}' (as an actor allowed to move {ref})")
    require_admitted(store, candidate, env)
    config = config or RolloutConfig()
    try:
        return RolloutSpec(model=contract.name, env=env, candidate=candidate, incumbent=incumbent,
                           p99_bound_ms=config.p99_latency_ms or contract.resources.p99_latency_ms, config=config)
    except ValueError as exc:
        errors = getattr(exc, "errors", lambda: [{"msg": str(exc)}])()
        raise InvalidInputError(f"cannot roll {candidate} out in {env}: "
                                + "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in errors)) from None


def start_rollout(store: Store, candidate: str, env: str, config: RolloutConfig | None = None, *,
                  prometheus: str | None = None, **parts: Any) -> Rollout:
    """Begin rolling ``candidate`` out in ``env`` (``rollout_spec``), or pick up its run. ``parts`` are passed to
    ``Rollout.begin``: ``traffic`` and ``signals`` replace the serving parts (tests, or a host wired otherwise);
    ``metrics=RolloutMetrics()`` exports the rollout's metrics, ``tickets`` and ``clock`` as for ``Rollout``.
    Drive it with ``drive``."""
    spec = rollout_spec(store, candidate, env, config)
    if "traffic" not in parts or "signals" not in parts:  # e.g. only ``metrics=RolloutMetrics()`` given
        parts = {**serving_parts(store, spec, prometheus=prometheus), **parts}
    return Rollout.begin(store, spec, **parts)


def take_over(store: Store, run: Run, **parts: Any) -> Rollout:
    """Own the interrupted rollout ``run`` in this process (its traffic recovered first)."""
    taken = store.runs.start(RUN_KIND, config=run.config, parents=run.parents, key=run.key, name=run.name)
    if taken.id != run.id:
        raise InvalidInputError(f"rollout {run.id} could not be taken over (its key now belongs to {taken.id})")
    return Rollout.open(store, taken, **parts)


def _live_owner(run: Run) -> bool:
    state = run.refresh().state
    if state in _ENDED_RUN:
        raise InvalidInputError(f"rollout {run.id} already ended ({state}): see 'factory rollout status --run {run.id}'")
    return state != "interrupted"


def operate(store: Store, run: Run, action: str, reason: str, **parts: Any) -> Rollout | None:
    """Pause, resume or roll back ``run``: queued for its live host (None), else done here (the rollout)."""
    if action not in ("pause", "resume", "rollback"):
        raise InvalidInputError(f"{action!r} is not an operator action: use pause, resume or rollback")
    if not reason.strip():
        raise InvalidInputError(f"say why you {action} the rollout: give --reason")
    if _live_owner(run):
        post_command(store, run.id, action, reason)
        return None
    rollout = take_over(store, run, **parts)
    getattr(rollout, action)(store.settings.actor, reason)
    return rollout


def promote_by_hand(store: Store, run: Run, reason: str, **parts: Any) -> Rollout | None:
    """Promote ``run``'s candidate now, moving the environment's ref as this store's actor.

    Returns the rollout when it was ended here, None when its live host ends it at its
    next tick. A refusal (the ref's rule does not list the actor) is recorded on the run
    and raised.
    """
    if not reason.strip():
        raise InvalidInputError("say why you promote by hand: give --reason")
    if not _live_owner(run):
        rollout = take_over(store, run, **parts)
        rollout.promote(store.refs, reason)
        return rollout
    config = run.config
    env_ref = f"model/{config['model']}/{config['env']}"
    try:
        change = store.refs.set(env_ref, config["candidate"], expected=config["incumbent"], reason=reason)
    except (RefProtectedError, RefConflictError) as exc:
        post_command(store, run.id, "promote-refused", reason, error=str(exc))
        raise
    post_command(store, run.id, "promoted", reason, ref_seq=change.seq)
    return None
