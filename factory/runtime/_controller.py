"""The controller's logic, as a plain class: it hosts pipeline runs (``Scheduler``), the rollouts
they start (``RolloutHost``) and the promotion rules, over one store acting as the controller.

It keeps nothing the store does not hold. ``start`` takes over every pipeline run and rollout
whose host is gone (their runs read ``interrupted``) and drives them on; then a loop thread
applies step results and timers, and looks for runs left by a dead host again every
``resume_s`` (a predecessor still exiting when this one started). Commands are idempotent: ``submit`` by its request id (the
pipeline run's key), ``cancel`` by the run id. The Ray actor (``_actor``) is a thin shell over
this class; tests drive it directly, with a fake clock and threads for launchers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, NotFoundError, RunInProgressError
from factory.runtime._launch import ThreadLauncher
from factory.runtime._plan import Plan
from factory.runtime._promotion import PromotionRules
from factory.runtime._rollouts import RolloutHost
from factory.runtime._scheduler import PIPELINE_KIND, Launcher, Scheduler, take_over_to_cancel

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["Controller", "CONTROLLER_ACTOR"]

log = logging.getLogger(__name__)

CONTROLLER_ACTOR = "factory-controller"  # the actor the default protected refs (model/*/prod, staging) allow


class Controller:
    """Hosts pipelines and rollouts for ``store`` (see the module). ``launchers["task"]`` runs
    ordinary steps (Ray tasks in the actor; threads by default); controller steps (rollouts)
    always run on threads here, next to the rollouts they host."""

    def __init__(self, store: Store, *, launchers: Mapping[str, Launcher] | None = None,
                 rollouts: RolloutHost | None = None, promotions: PromotionRules | None = None,
                 clock: Callable[[], float] = time.monotonic, loop_s: float = 0.5, resume_s: float = 5.0):
        self.store = store
        self.rollouts = rollouts or RolloutHost(store)
        self.promotions = promotions or PromotionRules(store)
        local = ThreadLauncher(store, rollouts=self.rollouts, promotions=self.promotions)
        chosen = {"task": ThreadLauncher(), "controller": local, **(launchers or {})}
        self.scheduler = Scheduler(store, chosen, clock=clock)
        self.clock = clock
        self.loop_s = loop_s
        self.resume_s = resume_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------
    def start(self, *, loop: bool = True) -> list[str]:
        """Take over what a previous controller left in flight, then (``loop``) start the loop thread.
        Returns the pipeline runs taken over."""
        self.rollouts.resume_all()
        resumed = self.resume()
        if loop and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="factory-controller", daemon=True)
            self._thread.start()
        return resumed

    def resume(self) -> list[str]:
        """Host every pipeline run whose controller is gone, from where its events leave it."""
        resumed = []
        for run in self.store.runs.list(kind=PIPELINE_KIND, state="interrupted"):
            try:
                taken = self.store.runs.start(PIPELINE_KIND, config=run.config, key=run.key, name=run.name)
            except RunInProgressError:  # another controller took it first
                continue
            if taken.id == run.id and not taken.reused:
                self.scheduler.adopt(taken)
                resumed.append(taken.id)
        if resumed:
            log.info("controller resumed pipeline run(s) %s", ", ".join(resumed))
        return resumed

    def _loop(self) -> None:
        next_resume = self.clock() + self.resume_s
        while not self._stop.is_set():
            try:
                self.scheduler.pump(self.loop_s)
                if self.clock() >= next_resume:  # a run whose host died after this one started
                    next_resume = self.clock() + self.resume_s
                    self.rollouts.resume_all()
                    self.resume()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad transition
                log.exception("controller loop: a transition failed")

    def pump(self, timeout: float = 0.0) -> int:
        """Apply queued step results and due timers (tests without the loop thread call it)."""
        return self.scheduler.pump(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and the rollout threads; what is in flight stays so for the next controller."""
        self._stop.set()
        self.scheduler.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.rollouts.stop(timeout)

    # -- commands -----------------------------------------------------------------------
    def submit(self, plan: Plan | Mapping[str, Any], request_id: str) -> str:
        """Run ``plan`` (resolved by the client); the same ``request_id`` again returns the same run."""
        if not isinstance(request_id, str) or not request_id.strip():
            raise InvalidInputError("a pipeline submission needs a request id (any unique text)")
        plan = plan if isinstance(plan, Plan) else Plan.model_validate(dict(plan))
        self.promotions.check_submission(plan)
        run_id = self.scheduler.submit(plan, request_id)
        self.scheduler.wake()
        return run_id

    def cancel(self, run_id: str, *, by: str, reason: str = "") -> str:
        """Cancel a pipeline run; its state afterwards. Cancelling an ended run changes nothing."""
        reason = reason or f"cancelled by {by}"
        if self.scheduler.cancel(run_id, by=by, reason=reason):
            return self.store.runs.get(run_id).state
        run = self.store.runs.get(run_id)
        if run.kind != PIPELINE_KIND:
            raise NotFoundError(f"run {run_id} is a {run.kind} run, not a pipeline run")
        if run.state == "interrupted":
            return take_over_to_cancel(self.store, run, by=by, reason=reason).refresh().state
        return run.state  # ended already, or hosted by another controller (which reads its own cancels)

    def hosted(self) -> dict[str, list[str]]:
        """The pipeline runs and rollouts this controller drives now."""
        return {"pipelines": self.scheduler.hosted(), "rollouts": self.rollouts.live()}
