"""The rollout state machine: shadow, canary steps, then promoted or rolled back.

``Rollout`` is a plain class. Its host (the controller; a CLI process in the meantime)
calls ``tick()`` every second or so: the machine reads the stage's window from its
``Signals``, analyses it and moves on. A failing analysis sends the candidate's traffic
to 0 at once, then writes the evidence and a remediation ticket; the environment's ref
stays on the incumbent. After the last step, promotion moves ``model/<name>/<env>`` to
the candidate by compare-and-swap as the host's actor (the ref is protected: refused,
the rollout pauses itself and says why). Pause, resume, manual promotion and manual
rollback are methods, and each is recorded with who and why.

The rollout is a run (``store.runs``) and every transition is one of its events,
written before the change takes effect, except the two that end it: a promotion's or a
rollback's traffic is set first, since a run that ended is never taken over.
``Rollout.open`` rebuilds the machine from them; before anything else a rebuilt machine
sets traffic back to the last passed stage's weight, so a host killed mid-stage never
leaves the candidate above it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, RefConflictError, RefProtectedError, UserError
from factory.serve._analysis import Analysis, Verdict, analyse
from factory.serve._rollout_config import RolloutSpec
from factory.serve._rollout_state import RolloutState, advance, replay
from factory.serve._rollout_store import Command, StoreTickets, TicketRequest, TicketSink, write_evidence
from factory.serve._router import TrafficConfig

if TYPE_CHECKING:
    from factory.serve._rollout_metrics import RolloutMetrics
    from factory.serve._signals import Signals, VersionFigures
    from factory.serve._traffic_control import TrafficControl
    from factory.store import Refs, Run, Store

__all__ = ["Rollout", "RUN_KIND"]

log = logging.getLogger(__name__)

RUN_KIND = "rollout"


class Rollout:
    """One rollout driven through its run (see the module). Build it with ``begin`` or ``open``."""

    def __init__(self, store: Store, run: Run, spec: RolloutSpec, *, traffic: TrafficControl, signals: Signals,
                 tickets: TicketSink | None = None, clock: Callable[[], float] = time.time,
                 metrics: RolloutMetrics | None = None, state: RolloutState | None = None):
        self.store = store
        self.run = run
        self.spec = spec
        self.traffic = traffic
        self.signals = signals
        self.tickets = tickets if tickets is not None else StoreTickets(store)
        self.clock = clock
        self.metrics = metrics
        self.state = state or RolloutState()
        self.stages = spec.config.stages()
        self.last_analysis: Analysis | None = None
        self.signals_error: str | None = None  # why the signals could not be read at the last tick, if they could not

    # -- building ----------------------------------------------------------------------
    @classmethod
    def begin(cls, store: Store, spec: RolloutSpec, **parts: Any) -> Rollout:
        """Start rolling ``spec.candidate`` out, or pick up the run its key already has.

        Refused when the environment's ref does not point at the incumbent, or when
        another rollout of the same model and environment has not ended.
        """
        current = store.refs.get(spec.env_ref)
        if current != spec.incumbent:
            raise InvalidInputError(f"{spec.env_ref} points at {current or 'nothing'}, not at the incumbent "
                                    f"{spec.incumbent}: start the rollout against what it serves now")
        for other in store.runs.list(kind=RUN_KIND):
            if other.key != spec.key and other.state not in ("succeeded", "failed", "cancelled"):
                config = other.config
                if (config.get("model"), config.get("env")) == (spec.model, spec.env):
                    raise UserError(f"rollout {other.id} of {spec.env_ref} has not ended ({other.state}): "
                                    f"let it finish, or end it with 'factory rollback --run {other.id}'")
        run = store.runs.start(RUN_KIND, config=spec, parents=[spec.candidate, spec.incumbent], key=spec.key,
                               name=spec.env_ref)
        if run.reused or run.resumed:
            return cls.open(store, run, **parts)
        rollout = cls(store, run, spec, **parts)
        rollout._begin()
        return rollout

    @classmethod
    def open(cls, store: Store, run: Run, **parts: Any) -> Rollout:
        """The rollout of ``run`` rebuilt from its events; one not ended first recovers its traffic."""
        if run.kind != RUN_KIND:
            raise InvalidInputError(f"run {run.id} is a {run.kind} run, not a rollout")
        spec = RolloutSpec.model_validate(run.config)
        state = replay(e.details for e in run.events())
        rollout = cls(store, run, spec, state=state, **parts)
        if not state.ended:
            rollout._recover()
        return rollout

    # -- recording ---------------------------------------------------------------------
    @property
    def actor(self) -> str:
        return self.store.settings.actor

    def _record(self, event: str, **details: Any) -> None:
        details = {"event": event, "t": self.clock(), **details}
        self.run.event("running", **details)
        self.state = advance(self.state, details)

    def _finish(self, state: str, event: str, **details: Any) -> None:
        details = {"event": event, "t": self.clock(), **details}
        self.run.finish(state, **details)
        self.state = advance(self.state, details)
        if self.metrics is not None:
            self.metrics.ended(self.spec.model, self.spec.env, event)

    # -- traffic -----------------------------------------------------------------------
    def _generation(self) -> int:
        """The next traffic generation: above this rollout's last and above whatever the replicas follow."""
        current = self.traffic.current(self.spec.model)
        return max(self.state.generation, current.generation if current is not None else 0) + 1

    def _config(self, weight: float, shadow_percent: float) -> TrafficConfig:
        spec = self.spec
        generation = self._generation()
        cand, inc = spec.candidate_version, spec.incumbent_version
        shadows = {cand: shadow_percent} if shadow_percent > 0 and weight < 100 else {}
        return TrafficConfig(model=spec.model, generation=generation, weights={inc: 100.0 - weight, cand: weight},
                             shadows=shadows, sticky=spec.config.sticky)

    def _stage_config(self, stage: int) -> TrafficConfig:
        """Traffic at ``stage`` (-1: none passed yet): its weight, and the shadow share that goes with it."""
        cfg = self.spec.config
        weight = self.stages[stage] if stage >= 0 else 0.0
        shadow = cfg.shadow_percent if (stage < 0 and cfg.shadow) or cfg.is_shadow(stage) else cfg.canary_shadow_percent
        return self._config(weight, shadow)

    def _apply(self, config: TrafficConfig) -> None:
        self.traffic.apply(config)
        if self.metrics is not None:
            self.metrics.traffic(self.spec.env, config)

    def _traffic(self, config: TrafficConfig) -> dict[str, Any]:
        """What an event says of the traffic it sets: the whole config and the candidate's weight."""
        return {"traffic": config.model_dump(mode="json"), "weight": config.weight(self.spec.candidate_version)}

    def _begin(self) -> None:
        config = self._stage_config(0)
        self._record("started", stage=0, **self._traffic(config))
        self._apply(config)
        self._stage_metric()

    def _recover(self) -> None:
        """Set traffic to the last passed stage's weight, before anything else, then record it."""
        config = self._stage_config(self.state.passed)
        self._apply(config)
        self._record("recovered", by=self.actor, reason=f"host {self.actor} took over the rollout",
                     **self._traffic(config))
        self._stage_metric()

    def _enter(self, stage: int) -> None:
        config = self._stage_config(stage)
        self._record("stage", stage=stage, **self._traffic(config))
        self._apply(config)
        self._stage_metric()

    def _stage_metric(self) -> None:
        if self.metrics is not None:
            self.metrics.stage(self.spec.model, self.spec.env, self.state.stage)

    # -- the loop ----------------------------------------------------------------------
    def tick(self) -> RolloutState:
        """Analyse the stage under way and act on the verdict; hold while paused (a failure still rolls back)."""
        s = self.state
        if s.ended:
            return s
        if s.holding:
            if not s.paused:
                self._next()
            return self.state
        now = self.clock()
        analysis = self._analyse(s.stage_started_at, now, complete=now - s.stage_started_at >= self.spec.config.window_s)
        if analysis is not None and analysis.verdict == Verdict.FAIL:
            self._roll_back(analysis, by=self.actor, reason=analysis.summary(), automatic=True)
        elif s.paused:
            pass
        elif analysis is not None and analysis.verdict == Verdict.PASS:
            self._record("passed", stage=s.stage, analysis=analysis.to_json())
            self._next()
        elif now - s.stage_started_at > self.spec.config.stage_limit_s:
            why = analysis.summary() if analysis is not None else "the signals could not be read"
            self._record("blocked", reason=f"stage {s.stage} undecided after {self.spec.config.stage_limit_s:g} s "
                                           f"({why}): resume to wait longer, or roll back")
        return self.state

    def _figures(self, start: float, end: float) -> tuple[VersionFigures, VersionFigures]:
        spec = self.spec
        cand, inc = spec.candidate_version, spec.incumbent_version
        figures = self.signals.figures(spec.model, [cand, inc], start, end)
        incumbent = figures[inc]
        if incumbent.requests < spec.config.min_requests and self.state.started_at < start:
            # At high steps the incumbent answers little: judge against its figures since the rollout began.
            incumbent = self.signals.figures(spec.model, [inc], self.state.started_at, end)[inc]
        return figures[cand], incumbent

    def _analyse(self, start: float, end: float, *, complete: bool) -> Analysis | None:
        spec = self.spec
        try:
            candidate, incumbent = self._figures(start, end)
        except Exception as exc:  # a monitoring outage holds the rollout; it never decides it
            message = f"{type(exc).__name__}: {exc}"
            if message != self.signals_error:
                log.warning("rollout %s: cannot read signals for %s (holding until they come back): %s",
                            self.run.id, spec.model, message)
            self.signals_error = message
            return None
        if self.signals_error is not None:
            log.warning("rollout %s: signals for %s are back", self.run.id, spec.model)
            self.signals_error = None
        analysis = analyse(candidate, incumbent, config=spec.config, bound_ms=spec.p99_bound_ms,
                           shadow=spec.config.is_shadow(self.state.stage), complete=complete, start=start, end=end)
        self.last_analysis = analysis
        self._log_figures(analysis, end - start)
        if self.metrics is not None:
            self.metrics.analysis(spec.model, spec.env, spec.candidate_version, analysis)
        return analysis

    def _log_figures(self, analysis: Analysis, elapsed: float) -> None:
        """The live figures on the run (one metric step per stage, replaced at every tick): status reads them."""
        values = {"elapsed_s": elapsed}
        for role, f in (("candidate", analysis.candidate), ("incumbent", analysis.incumbent)):
            for name in ("requests", "errors", "p99_ms", "error_rate", "compared"):
                value = getattr(f, name)
                if value is not None:
                    values[f"{role}.{name}"] = value
        self.run.log_metrics(max(self.state.stage, 0), values)

    def _next(self) -> None:
        following = self.state.passed + 1
        if following < len(self.stages):
            self._enter(following)
        else:
            self._promote_automatically()

    # -- ending ------------------------------------------------------------------------
    def _promote_automatically(self) -> None:
        spec = self.spec
        try:
            change = self.store.refs.set(spec.env_ref, spec.candidate, expected=spec.incumbent,
                                         reason=f"rollout {self.run.id}: every stage passed")
        except RefProtectedError as exc:
            self._record("blocked", reason=f"promotion refused: {exc}; a release manager can promote it with "
                                           f"'factory promote {spec.candidate}'")
            return
        except RefConflictError:
            now_at = self.store.refs.get(spec.env_ref)
            if now_at != spec.candidate:  # moved by someone else during the rollout: a person decides
                self._record("blocked", reason=f"{spec.env_ref} moved to {now_at} during the rollout, so it was "
                                               "not promoted: roll back, or promote by hand")
                return
            change = None  # promoted already (a host died between the move and its record)
        self._promoted(by=self.actor, reason="every stage passed", seq=change.seq if change else None)

    def _only(self, version: str) -> TrafficConfig:
        return TrafficConfig.single(self.spec.model, version, self._generation())

    def _promoted(self, *, by: str, reason: str, seq: int | None, command: int | None = None) -> None:
        config = self._only(self.spec.candidate_version)
        extra = {"command": command} if command is not None else {}
        # Traffic first, as for a rollback: an ended run is never taken over, so a host killed between
        # the two would leave the incumbent loaded beside the candidate for good. Killed before the
        # record, the next host finds the ref moved already and ends the same promotion.
        self._apply(config)
        self._finish("succeeded", "promoted", by=by, reason=reason, ref=self.spec.env_ref, ref_seq=seq,
                     **self._traffic(config), **extra)

    def _roll_back(self, analysis: Analysis | None, *, by: str, reason: str, automatic: bool,
                   command: int | None = None) -> None:
        spec = self.spec
        config = self._only(spec.incumbent_version)
        self._apply(config)  # first: the candidate's traffic goes to 0 before anything is written
        stage, weight = self.state.stage, self.state.weight
        evidence = write_evidence(self.store, spec, self.run, reason=reason, by=by, stage=stage, weight=weight,
                                  analysis=analysis.to_json() if analysis is not None else None)
        details: dict[str, Any] = {"by": by, "reason": reason, "evidence": evidence, "automatic": automatic,
                                   **self._traffic(config)}
        if analysis is not None:
            details["analysis"] = analysis.to_json()
        if command is not None:
            details["command"] = command
        if automatic:
            try:
                details["ticket"] = self.tickets.open(TicketRequest(
                    ticket_id=self.run.id, title=f"{spec.model} {spec.candidate_version} rolled back in {spec.env}",
                    body=f"Rollout {self.run.id} rolled {spec.candidate} back at stage {stage} "
                         f"({weight:g} % of traffic): {reason}. Evidence: {evidence}.",
                    subject=spec.candidate, evidence=evidence, run_id=self.run.id, model=spec.model, env=spec.env))
            except Exception as exc:  # the rollback stands; the missing ticket is said on the run
                log.exception("rollout %s: could not open the remediation ticket", self.run.id)
                details["ticket_error"] = f"{type(exc).__name__}: {exc}"
        self._finish("failed" if automatic else "cancelled", "rolled-back", **details)

    # -- operators ---------------------------------------------------------------------
    def _live(self, what: str) -> None:
        if self.state.ended:
            raise InvalidInputError(f"rollout {self.run.id} already ended ({self.state.outcome}): nothing to {what}")

    def pause(self, by: str, reason: str, *, command: int | None = None) -> RolloutState:
        """Hold the rollout at its current weight (a failing analysis still rolls it back)."""
        self._live("pause")
        self._record("paused", by=by, reason=reason, **({"command": command} if command is not None else {}))
        return self.state

    def resume(self, by: str, reason: str, *, command: int | None = None) -> RolloutState:
        """Go on from where the rollout was paused (by a person or by itself)."""
        self._live("resume")
        if not self.state.paused:
            raise InvalidInputError(f"rollout {self.run.id} is not paused: nothing to resume")
        self._record("resumed", by=by, reason=reason, **({"command": command} if command is not None else {}))
        return self.state

    def rollback(self, by: str, reason: str, *, command: int | None = None) -> RolloutState:
        """End the rollout now: all traffic to the incumbent, the window's figures kept as evidence."""
        self._live("roll back")
        analysis = None
        if not self.state.holding:
            now = self.clock()
            analysis = self._analyse(self.state.stage_started_at, now, complete=False)
        self._roll_back(analysis, by=by, reason=reason, automatic=False, command=command)
        return self.state

    def promote(self, refs: Refs, reason: str) -> RolloutState:
        """Promote by hand: move the environment's ref as ``refs``' actor (a release manager), then end.

        A refused move is recorded on the run with who and why, and raised; the rollout
        stays as it was.
        """
        self._live("promote")
        spec = self.spec
        try:
            change = refs.set(spec.env_ref, spec.candidate, expected=spec.incumbent, reason=reason)
        except (RefProtectedError, RefConflictError) as exc:
            self.refused(refs.actor, reason, str(exc))
            raise
        self._promoted(by=refs.actor, reason=reason, seq=change.seq)
        return self.state

    def refused(self, by: str, reason: str, error: str, *, command: int | None = None) -> None:
        """Record a promotion attempt the ref's rule refused."""
        self._record("refused", by=by, reason=reason, error=error,
                     **({"command": command} if command is not None else {}))

    def apply(self, command: Command) -> None:
        """Carry out an operator's command from the queue, once: its queue position is recorded either way."""
        if command.seq <= self.state.commands or self.state.ended:
            return
        try:
            if command.action == "pause":
                self.pause(command.actor, command.reason, command=command.seq)
            elif command.action == "resume":
                self.resume(command.actor, command.reason, command=command.seq)
            elif command.action == "rollback":
                self.rollback(command.actor, command.reason, command=command.seq)
            elif command.action == "promoted":
                if self.store.refs.get(self.spec.env_ref) != self.spec.candidate:
                    raise InvalidInputError(f"{self.spec.env_ref} does not point at the candidate")
                self._promoted(by=command.actor, reason=command.reason, seq=command.details.get("ref_seq"),
                               command=command.seq)
            elif command.action == "promote-refused":
                self.refused(command.actor, command.reason, str(command.details.get("error", "")),
                             command=command.seq)
            else:
                raise InvalidInputError(f"{command.action!r} is not a command this host knows")
        except UserError as exc:
            log.warning("rollout %s: %s from %s not applied: %s", self.run.id, command.action, command.actor, exc)
            self._record("ignored", by=command.actor, reason=command.reason, action=command.action, error=str(exc),
                         command=command.seq)
