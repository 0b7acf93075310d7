"""Hosting a rollout: the loop that ticks it, and operators' actions from any process.

``drive`` is the host's loop: apply queued commands, tick, sleep, until the rollout ends
or ``stop`` is set. The controller hosts it in pass two; a CLI process can host it now.

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, RefConflictError, RefProtectedError
from factory.serve._rollout import RUN_KIND, Rollout
from factory.serve._rollout_store import post_command, read_commands

if TYPE_CHECKING:
    from factory.serve._rollout_state import RolloutState
    from factory.store import Run, Store

__all__ = ["drive", "operate", "promote_by_hand", "take_over"]

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
