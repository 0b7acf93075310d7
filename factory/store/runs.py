"""Runs: the record of anything that executes (training, a tuning trial, a gate run, a
pipeline step, a rollout).

``runs.start(kind, config=..., parents=..., key=...)`` records a ``run`` artifact (its
config and inputs; parents = the inputs) and the ref ``run/<id>``, and makes this process
the run's owner. The run then appends state events, metric points and outputs (each an
artifact whose parents include the run), and finishes in a terminal state.

The key is an idempotency key (for example the config digest and the input digests):
starting a key that already has a succeeded run returns that run (``reused``); one whose
owner died is taken over where it stopped (``resumed``: its committed outputs are there);
one still running elsewhere is refused. Starting one key from many processes at once
gives one run: the catalog's unique index decides, not a read before the write.

A run's owner is a process (host, pid, start time). A run that has not finished and
whose owner is gone reads as ``interrupted``: on the owner's host by the process table,
elsewhere once its heartbeat is older than ``stale_after_s`` (every write is a heartbeat;
``run.heartbeat()`` is one with nothing else to say).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError, NotFoundError, RunInProgressError
from factory.store._digest import check_digest
from factory.store._fields import indexed_fields
from factory.store._owner import current_owner, owner_alive
from factory.store.artifacts import _metadata_dict
from factory.store.catalog import Catalog, MetricPoint, RunEvent, RunOwner, RunRecord, to_iso
from factory.store.kinds import ArtifactKind

if TYPE_CHECKING:
    from pydantic import BaseModel

    from factory.store.artifacts import Artifact, ArtifactStore

__all__ = ["Runs", "Run", "RunState", "RunEvent", "MetricPoint", "RunOwner"]

_KIND = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_ATTEMPTS = 8  # start() retries when another process starts or takes over the same key meanwhile


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # read only: not finished, and its owner is gone


TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
_WRITABLE = frozenset(RunState) - {RunState.INTERRUPTED}


def _state(value: str, allowed: frozenset[RunState], what: str) -> RunState:
    if value not in allowed:
        raise InvalidInputError(f"{value!r} is not a {what}: use one of {', '.join(sorted(allowed))}")
    return RunState(value)


def _label(text: str, what: str, limit: int = 256) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > limit or any(c in text for c in "\n\r\0"):
        raise InvalidInputError(f"{text!r} is not a valid {what}: give 1 to {limit} characters on one line")
    return text


class Run:
    """A handle on one run. Attributes reflect the run as last read or written through
    this handle; ``refresh()`` reads it again."""

    def __init__(self, runs: Runs, record: RunRecord, *, reused: bool = False, resumed: bool = False):
        self._runs = runs
        self._record = record
        self._artifact: Artifact | None = None
        self.reused = reused
        self.resumed = resumed

    def __repr__(self) -> str:
        return f"Run({self.id!r}, kind={self.kind!r}, state={self.state!r})"

    id = property(lambda self: self._record.id)
    kind = property(lambda self: self._record.kind)
    key = property(lambda self: self._record.key)
    name = property(lambda self: self._record.name)
    digest = property(lambda self: self._record.digest)
    owner = property(lambda self: self._record.owner)

    @property
    def state(self) -> str:
        """The last recorded state, or ``interrupted`` if it is not finished and its owner is gone."""
        return self._runs.state_of(self._record)

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self._record.started_at)

    @property
    def updated_at(self) -> datetime:
        return datetime.fromisoformat(self._record.updated_at)

    @property
    def artifact(self) -> Artifact:
        """The run's ``run`` artifact: its config and inputs."""
        if self._artifact is None:
            self._artifact = self._runs.artifacts.get(self.digest)
        return self._artifact

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.artifact.metadata["config"])

    @property
    def parents(self) -> tuple[str, ...]:
        return self.artifact.parents

    def refresh(self) -> Run:
        self._record = self._runs.record(self.id)
        return self

    # -- writing (the owner only) ----------------------------------------------------
    def event(self, state: str, **details: Any) -> RunEvent:
        """Record a state change (queued, running, retrying, succeeded, failed, cancelled)."""
        state = _state(state, _WRITABLE, "run state")
        at = self._runs.now()
        event = self._runs.catalog.run_event(self.id, current_owner(), state=state, actor=self._runs.actor, at=at,
                                             details=details)
        self._record = replace(self._record, state=str(state), heartbeat_at=at, updated_at=at)
        return event

    def finish(self, state: str = "succeeded", **details: Any) -> RunEvent:
        """End the run in a terminal state: succeeded, failed or cancelled."""
        return self.event(_state(state, TERMINAL, "terminal run state"), **details)

    def heartbeat(self) -> None:
        """Say this run's owner is alive (every other write says so too)."""
        at = self._runs.now()
        self._runs.catalog.heartbeat_run(self.id, current_owner(), at)
        self._record = replace(self._record, heartbeat_at=at, updated_at=at)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record metric values at ``step`` (logging a step again replaces its values)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInputError(f"metric step {step!r} is not a step: give an int >= 0")
        values = {}
        for name, value in dict(metrics).items():
            _label(name, "metric name")
            try:
                values[name] = float(value)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"metric {name!r} = {value!r} is not a number") from exc
        self._runs.catalog.log_run_metrics(self.id, current_owner(), step, values, self._runs.now())

    def output(self, name: str, digest: str) -> Artifact:
        """Record ``digest`` (an artifact, or a stored blob) as the output ``name``. Its
        parents then include this run, and ``outputs()`` shows it committed."""
        _label(name, "output name")
        check_digest(digest)
        store = self._runs.artifacts
        known = store.catalog.artifact(digest)
        if known is not None:
            artifact = store.add(known.kind, digest=digest, parents=[self.digest], name=known.name)
        elif store.blobs.exists(digest):
            artifact = store.add(ArtifactKind.BLOB, digest=digest, name=name,
                                 metadata={"size": store.blobs.size(digest)}, parents=[self.digest])
        else:
            raise NotFoundError(f"output {name!r} of run {self.id}: {digest} is not in the store; store it first")
        self._runs.catalog.add_run_output(self.id, current_owner(), name, digest, self._runs.now())
        return artifact

    # -- reading -----------------------------------------------------------------------
    def outputs(self) -> dict[str, str]:
        """The outputs committed so far, by name."""
        return self._runs.catalog.run_outputs(self.id)

    def metrics(self) -> list[MetricPoint]:
        return self._runs.catalog.run_metrics(self.id)

    def events(self) -> list[RunEvent]:
        return self._runs.catalog.run_events(self.id)


class Runs:
    """Start, find and follow runs in one store."""

    def __init__(self, catalog: Catalog, artifacts: ArtifactStore, *, actor: str,
                 clock: Callable[[], datetime] | None = None, stale_after_s: float = 300.0):
        self.catalog = catalog
        self.artifacts = artifacts
        self.actor = actor
        self.stale_after_s = stale_after_s
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> str:
        return to_iso(self._clock())

    def state_of(self, record: RunRecord) -> str:
        """``record``'s state as a reader should see it: ``interrupted`` when its owner is gone."""
        if record.state in TERMINAL:
            return record.state
        alive = owner_alive(record.owner, datetime.fromisoformat(record.heartbeat_at), self._clock(),
                            self.stale_after_s)
        return record.state if alive else str(RunState.INTERRUPTED)

    def start(self, kind: str, *, config: Mapping[str, Any] | BaseModel, parents: Iterable[str] = (),
              key: str | None = None, name: str | None = None) -> Run:
        """Start a run of ``kind`` owned by this process, or, with ``key``, return the run
        that key already has (succeeded: ``reused``; owner gone: taken over, ``resumed``)."""
        if not isinstance(kind, str) or len(kind) > 64 or not _KIND.fullmatch(kind):
            raise InvalidInputError(f"{kind!r} is not a valid run kind: use lowercase words joined by '-' "
                                    "(e.g. 'training', 'gate-run')")
        if key is not None:
            _label(key, "run key", 1024)
        if name is not None:
            _label(name, "run name")
        parents = [self.artifacts.resolve(p) for p in parents]
        for _ in range(_ATTEMPTS):
            if key is not None:
                existing = self.catalog.run_by_key(key)
                if existing is not None:
                    run = self._take(existing)
                    if run is not None:
                        return run
                    continue
            run = self._new(kind, config, parents, key, name)
            if run is not None:
                return run
        raise RunInProgressError(f"run key {key!r} changed hands {_ATTEMPTS} times while starting: retry", "", "")

    def _new(self, kind: str, config: Any, parents: list[str], key: str | None, name: str | None) -> Run | None:
        run_id = f"{kind}-{uuid.uuid4().hex[:12]}"
        meta = {"run_id": run_id, "run_kind": kind, "key": key, "config": _metadata_dict(config)}
        artifact, entry = self.artifacts.prepare(ArtifactKind.RUN, metadata=meta, parents=parents, name=name or run_id)
        at = self.now()
        record = RunRecord(run_id, kind, key, name, artifact.digest, str(RunState.RUNNING), current_owner(), at, at, at)
        fields = indexed_fields(artifact.metadata)
        if self.catalog.start_run(record, entry, parents, actor=self.actor, details={}, fields=fields) is None:
            return None
        run = Run(self, record)
        run._artifact = artifact
        return run

    def _take(self, existing: RunRecord) -> Run | None:
        """The run holding a key: reused if it succeeded, taken over if its owner is gone."""
        if existing.state == RunState.SUCCEEDED:
            return Run(self, existing, reused=True)
        if self.state_of(existing) != RunState.INTERRUPTED:
            raise RunInProgressError(
                f"run {existing.id} (key {existing.key!r}) is still {existing.state}, owned by {existing.owner} "
                f"(last heartbeat {existing.heartbeat_at}): wait for it to finish, or stop that process and "
                "start again to resume it",
                existing.id, str(existing.owner),
            )
        details = {"resumed": True, "previous_owner": str(existing.owner), "previous_state": existing.state}
        event = self.catalog.claim_run(existing.id, existing.owner, current_owner(), state=str(RunState.RUNNING),
                                       actor=self.actor, at=self.now(), details=details)
        if event is None:
            return None
        return Run(self, self.record(existing.id), resumed=True)

    def record(self, run_id: str) -> RunRecord:
        record = self.catalog.run(run_id) if isinstance(run_id, str) else None
        if record is None:
            raise NotFoundError(f"no run {run_id!r}: check the id (see 'factory runs list')")
        return record

    def get(self, run_id: str) -> Run:
        return Run(self, self.record(run_id))

    def list(self, kind: str | None = None, state: str | None = None, since: datetime | str | None = None,
             key: str | None = None) -> list[Run]:
        """Runs, oldest first, by kind, state (as read: ``interrupted`` included), start time and key."""
        wanted = _state(state, frozenset(RunState), "run state") if state is not None else None
        if wanted is None or wanted in TERMINAL:
            stored = None if wanted is None else [str(wanted)]
        elif wanted == RunState.INTERRUPTED:
            stored = [str(s) for s in _WRITABLE - TERMINAL]
        else:
            stored = [str(wanted)]
        since_text = to_iso(since) if isinstance(since, datetime) else since
        records = self.catalog.runs(kind=kind, states=stored, since=since_text, key=key)
        runs = [Run(self, r) for r in records]
        return runs if wanted is None else [r for r in runs if r.state == wanted]

    def events(self, since: int = 0) -> list[RunEvent]:
        """Every run's events after ``since`` (a ``seq``), in order: follow runs without rescanning."""
        return self.catalog.run_events(None, since)
