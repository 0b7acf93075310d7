"""The run tables' queries, in the same portable SQL as ``_sql.py`` (mixed into ``SqlCatalog``).

A run's row holds its last state, its owner and its heartbeat; events, metrics and
outputs are append-only rows beside it. Every write checks, in its transaction, that
the caller still owns the run and that the run has not finished.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from factory.errors import InvalidInputError, NotFoundError, RunInProgressError
from factory.store._catalog_base import IndexedArtifact, MetricPoint, RunEvent, RunOwner, RunRecord

__all__ = ["SqlRuns", "TERMINAL_STATES"]

TERMINAL_STATES = ("succeeded", "failed", "cancelled")
_RUN = ("id, kind, run_key, name, digest, state, owner_host, owner_pid, owner_started, heartbeat_at, started_at, "
        "updated_at")
_EVENT = "seq, run_id, state, actor, at, details"
_RETIRED = "('failed', 'cancelled')"  # states that free a run's key (see the runs_live_key index)


def _record(row: Sequence[Any]) -> RunRecord:
    (run_id, kind, key, name, digest, state, host, pid, started, heartbeat_at, started_at, updated_at) = row
    return RunRecord(run_id, kind, key, name, digest, state, RunOwner(host, int(pid), float(started)),
                     heartbeat_at, started_at, updated_at)


def _event(row: Sequence[Any]) -> RunEvent:
    seq, run_id, state, actor, at, details = row
    return RunEvent(int(seq), run_id, state, actor, at, json.loads(details))


def _details(details: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(details), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"run event details must be JSON-serialisable: {exc}") from exc


class SqlRuns:
    """Runs, their events, metrics and outputs. Relies on ``SqlCatalog``'s helpers."""

    _run: Any
    _many: Any
    _one: Any
    _all: Any
    _connect: Any
    _record_change: Any
    _insert_artifact: Any
    integrity_error: type[BaseException]

    def start_run(self, run: RunRecord, artifact: IndexedArtifact, parents: Sequence[str], *, actor: str,
                  details: Mapping[str, Any], fields: Mapping[str, str] | None = None) -> RunEvent | None:
        text = _details(details)
        try:
            with self._connect(write=True) as db:
                o = run.owner
                self._run(db, f"INSERT INTO runs({_RUN}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          (run.id, run.kind, run.key, run.name, run.digest, run.state, o.host, o.pid, o.started,
                           run.heartbeat_at, run.started_at, run.updated_at))
                self._insert_artifact(db, artifact, parents, fields)
                ref = f"run/{run.id}"
                self._run(db, "INSERT INTO refs(name, target, updated_at) VALUES (?,?,?)", (ref, run.digest, run.started_at))
                self._record_change(db, ref, None, run.digest, actor, f"start {run.kind} run", run.started_at)
                return self._append_event(db, run.id, run.state, actor, run.started_at, text)
        except self.integrity_error:
            if run.key is not None and self.run_by_key(run.key) is not None:
                return None  # another process started this key first
            raise

    def _append_event(self, db: Any, run_id: str, state: str, actor: str, at: str, details: str) -> RunEvent:
        seq = self._run(db, "INSERT INTO run_events(run_id, state, actor, at, details) VALUES (?,?,?,?,?) RETURNING seq",
                        (run_id, state, actor, at, details)).fetchone()[0]
        return RunEvent(int(seq), run_id, state, actor, at, json.loads(details))

    def run(self, run_id: str) -> RunRecord | None:
        row = self._one(f"SELECT {_RUN} FROM runs WHERE id=?", (run_id,))
        return _record(row) if row else None

    def run_by_key(self, key: str) -> RunRecord | None:
        row = self._one(f"SELECT {_RUN} FROM runs WHERE run_key=? AND state NOT IN {_RETIRED}", (key,))
        return _record(row) if row else None

    def runs(self, *, kind: str | None = None, states: Sequence[str] | None = None, since: str | None = None,
             key: str | None = None) -> list[RunRecord]:
        query, args = f"SELECT {_RUN} FROM runs WHERE 1=1", []
        for column, value in (("kind", kind), ("run_key", key)):
            if value is not None:
                query += f" AND {column}=?"
                args.append(value)
        if states is not None:
            if not states:
                return []
            query += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        if since is not None:
            query += " AND started_at >= ?"
            args.append(since)
        return [_record(r) for r in self._all(query + " ORDER BY seq", args)]

    def _owned(self, db: Any, run_id: str, owner: RunOwner) -> RunRecord:
        """The run, if ``owner`` owns it and it has not finished; else the error that says why not."""
        row = self._run(db, f"SELECT {_RUN} FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}: check the id (see 'factory runs list')")
        run = _record(row)
        if run.owner != owner:
            raise RunInProgressError(
                f"run {run_id} is now owned by {run.owner}, not this process ({owner}): another process took it "
                "over after this one looked gone; stop here and let the new owner finish it",
                run_id, str(run.owner),
            )
        if run.state in TERMINAL_STATES:
            raise InvalidInputError(f"run {run_id} already finished as {run.state}: start a new run to do more")
        return run

    def _touch(self, db: Any, run_id: str, at: str, state: str | None = None) -> None:
        if state is None:
            self._run(db, "UPDATE runs SET heartbeat_at=?, updated_at=? WHERE id=?", (at, at, run_id))
        else:
            self._run(db, "UPDATE runs SET state=?, heartbeat_at=?, updated_at=? WHERE id=?", (state, at, at, run_id))

    def claim_run(self, run_id: str, expected: RunOwner, owner: RunOwner, *, state: str, actor: str, at: str,
                  details: Mapping[str, Any]) -> RunEvent | None:
        text = _details(details)
        with self._connect(write=True) as db:
            cur = self._run(
                db,
                "UPDATE runs SET owner_host=?, owner_pid=?, owner_started=?, state=?, heartbeat_at=?, updated_at=? "
                f"WHERE id=? AND owner_host=? AND owner_pid=? AND owner_started=? AND state NOT IN {_RETIRED} "
                "AND state <> 'succeeded'",
                (owner.host, owner.pid, owner.started, state, at, at, run_id, expected.host, expected.pid,
                 expected.started),
            )
            if cur.rowcount != 1:
                return None
            return self._append_event(db, run_id, state, actor, at, text)

    def run_event(self, run_id: str, owner: RunOwner, *, state: str, actor: str, at: str,
                  details: Mapping[str, Any]) -> RunEvent:
        text = _details(details)
        with self._connect(write=True) as db:
            self._owned(db, run_id, owner)
            self._touch(db, run_id, at, state)
            return self._append_event(db, run_id, state, actor, at, text)

    def heartbeat_run(self, run_id: str, owner: RunOwner, at: str) -> None:
        with self._connect(write=True) as db:
            self._owned(db, run_id, owner)
            self._touch(db, run_id, at)

    def run_events(self, run_id: str | None = None, since: int = 0) -> list[RunEvent]:
        if run_id is None:
            rows = self._all(f"SELECT {_EVENT} FROM run_events WHERE seq > ? ORDER BY seq", (since,))
        else:
            rows = self._all(f"SELECT {_EVENT} FROM run_events WHERE run_id=? AND seq > ? ORDER BY seq", (run_id, since))
        return [_event(r) for r in rows]

    def log_run_metrics(self, run_id: str, owner: RunOwner, step: int, metrics: Mapping[str, float], at: str) -> None:
        # NaN (a diverged loss is worth recording) is stored as NULL, which every database keeps.
        rows = [(run_id, name, step, None if math.isnan(v) else v, at) for name, v in metrics.items()]
        with self._connect(write=True) as db:
            self._owned(db, run_id, owner)
            self._many(db, "INSERT INTO run_metrics(run_id, name, step, value, at) VALUES (?,?,?,?,?) "
                           "ON CONFLICT (run_id, name, step) DO UPDATE SET value=excluded.value, at=excluded.at", rows)
            self._touch(db, run_id, at)

    def run_metrics(self, run_id: str) -> list[MetricPoint]:
        rows = self._all("SELECT step, name, value, at FROM run_metrics WHERE run_id=? ORDER BY step, name", (run_id,))
        return [MetricPoint(int(s), n, math.nan if v is None else float(v), at) for s, n, v, at in rows]

    def add_run_output(self, run_id: str, owner: RunOwner, name: str, digest: str, at: str) -> None:
        with self._connect(write=True) as db:
            self._owned(db, run_id, owner)
            row = self._run(db, "SELECT digest FROM run_outputs WHERE run_id=? AND name=?", (run_id, name)).fetchone()
            if row is not None and row[0] != digest:
                raise InvalidInputError(
                    f"run {run_id} already has output {name!r} = {row[0]}: outputs are kept as recorded; "
                    "give this one another name"
                )
            if row is None:
                self._run(db, "INSERT INTO run_outputs(run_id, name, digest, at) VALUES (?,?,?,?)",
                          (run_id, name, digest, at))
            self._touch(db, run_id, at)

    def run_outputs(self, run_id: str) -> dict[str, str]:
        rows = self._all("SELECT name, digest FROM run_outputs WHERE run_id=? ORDER BY at, name", (run_id,))
        return {n: d for n, d in rows}
