"""``factory run PIPELINE``, ``factory status [RUN]`` and ``factory cancel RUN``.

``run`` hands the pipeline to the store's controller on the Ray cluster at ``--address`` /
$RAY_ADDRESS (it starts a local cluster if there is none, and then waits, since that cluster
ends with the command), or with ``--local`` runs it in this process. ``status`` reads the
store only: a table of steps with states, attempts, durations and output digests, kept live
with ``--watch`` (and by ``run``) until the run ends.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import (CatalogOption, HomeOption, JsonOption, console, fail, open_store, plain,
                                         print_json, short_digest)

if TYPE_CHECKING:
    from rich.table import Table

    from factory.runtime._status import PipelineStatus

_COLOURS = {"succeeded": "green", "reused": "cyan", "failed": "red", "running": "yellow", "retrying": "magenta",
            "waiting": "yellow", "cancelled": "dim", "skipped": "dim", "interrupted": "yellow"}
AddressOption = typer.Option(None, "--address", help="The Ray cluster (default: $RAY_ADDRESS, else a local one).")


def _state(state: str) -> str:
    colour = _COLOURS.get(state)
    return f"[{colour}]{state}[/{colour}]" if colour else state


def steps_table(status: PipelineStatus) -> Table:
    """The run's steps: state (with the attempt after the first), duration and outputs (short digests);
    step run ids are in ``--json``."""
    from rich.table import Table

    now = datetime.now(UTC)
    title = f"{plain(status.name)} · {status.run_id} · {_state(status.state)}"
    if status.error:
        title += f"\n{plain(status.error)}"
    table = Table(title=title, title_justify="left")
    for column in ("step", "state", "time", "outputs"):
        table.add_column(column, no_wrap=column != "outputs", overflow="fold")
    for step in status.steps:
        elapsed = step.elapsed_s(now)
        outputs = "\n".join(f"{name} {short_digest(d)}" for name, d in sorted(step.outputs.items()))
        detail = outputs or (plain(step.error) if step.error else "")
        state = _state(step.state) + (f" #{step.attempt}" if step.attempt > 1 else "")
        table.add_row(step.name, state, "" if elapsed is None else f"{elapsed:.1f} s", detail)
    return table


def _as_json(status: PipelineStatus) -> dict[str, Any]:
    return {"run": status.run_id, "name": status.name, "state": status.state, "started_at": status.started_at,
            "failed_step": status.failed_step, "error": status.error,
            "steps": [{"name": s.name, "state": s.state, "attempt": s.attempt, "run": s.run, "outputs": dict(s.outputs),
                       "error": s.error, "duration_s": s.duration_s} for s in status.steps]}


def _watch(store: Any, run_id: str) -> PipelineStatus:
    """Show the run live until it ends; its last status."""
    from rich.live import Live

    from factory.runtime._status import pipeline_status, wait_pipeline

    with Live(steps_table(pipeline_status(store, run_id)), console=console, refresh_per_second=4) as live:
        return wait_pipeline(store, run_id, on_change=lambda s: live.update(steps_table(s)))


def _connect(address: str | None) -> bool:
    """Join the cluster (or start a local one); whether it is a local one that ends with this command."""
    from factory.train._cluster import connect

    joined = address or os.environ.get("RAY_ADDRESS")
    connect(address)
    return not joined


def run(
    pipeline: str = typer.Argument(..., help="The pipeline's YAML file."),
    request_id: str = typer.Option(None, "--request-id", help="Submitting again with it gives the same run."),
    detach: bool = typer.Option(False, "--detach", help="Return once submitted (needs a running cluster)."),
    local: bool = typer.Option(False, "--local", help="Run in this process, steps on threads (no Ray)."),
    address: str = AddressOption,
    home: str = HomeOption,
    catalog: str = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a pipeline: each step a run, unchanged steps reused; live status until it ends."""
    from factory.runtime._client import submit_pipeline
    from factory.runtime._status import wait_pipeline

    store = open_store(home, catalog)
    controller: Any = "actor"
    if local:
        from factory.runtime._controller import Controller

        controller = Controller(store)
        controller.start()
    elif _connect(address) and detach:
        fail("--detach needs a running Ray cluster (--address or $RAY_ADDRESS): a local one ends with this command")
    run_id = submit_pipeline(pipeline, store=store, request_id=request_id, controller=controller)
    if detach:
        console.print(run_id)
        return
    status = wait_pipeline(store, run_id) if as_json else _watch(store, run_id)
    if not isinstance(controller, str):
        controller.stop()
    if as_json:
        print_json(_as_json(status))
    status.require()


def status(
    run_id: str = typer.Argument(None, help="A pipeline run; without it, the latest pipeline runs."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep the table live until the run ends."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many runs to list."),
    home: str = HomeOption,
    catalog: str = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """A pipeline run's steps with states, durations and digests (or the latest runs)."""
    from rich.table import Table

    from factory.runtime._status import pipeline_runs, pipeline_status

    store = open_store(home, catalog)
    if run_id is None:
        runs = pipeline_runs(store, limit=limit)
        if as_json:
            print_json([_as_json(r) for r in runs])
            return
        table = Table(title=f"{len(runs)} pipeline runs")
        for column in ("run", "pipeline", "state", "started", "steps"):
            table.add_column(column, no_wrap=True)
        for r in runs:
            done = sum(1 for s in r.steps if s.done)
            table.add_row(r.run_id, plain(r.name), _state(r.state), r.started_at[:19], f"{done}/{len(r.steps)}")
        console.print(table)
        return
    current = pipeline_status(store, run_id)
    if as_json:
        print_json(_as_json(current))
    elif watch and not current.ended:
        _watch(store, run_id)
    else:
        console.print(steps_table(current))


def cancel(
    run_id: str = typer.Argument(..., help="The pipeline run to cancel."),
    reason: str = typer.Option("", "--reason", help="Why (recorded on the run)."),
    address: str = AddressOption,
    home: str = HomeOption,
    catalog: str = CatalogOption,
) -> None:
    """Cancel a pipeline run: running steps stop, the rest are skipped."""
    from factory.runtime._client import cancel_pipeline
    from factory.runtime._controller import Controller
    from factory.runtime._status import pipeline_status

    store = open_store(home, catalog)
    current = pipeline_status(store, run_id)
    if current.ended:
        console.print(f"{run_id} is {current.state} already")
        return
    if current.state == "interrupted":  # nobody hosts it: cancel in the store
        state = Controller(store).cancel(run_id, by=store.settings.actor, reason=reason)
    else:
        if not (address or os.environ.get("RAY_ADDRESS")):
            fail(f"{run_id} is hosted by a controller on a Ray cluster: give --address or set RAY_ADDRESS")
        _connect(address)
        state = cancel_pipeline(run_id, store=store, reason=reason)
    console.print(f"{run_id}: {_state(state)}")


COMMANDS = {"run": run, "status": status, "cancel": cancel}
