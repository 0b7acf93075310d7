"""``factory runs``: list runs, show one run's config, events, metrics and outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import HomeOption, JsonOption, console, open_store, parse_time, print_json

if TYPE_CHECKING:
    from factory.store import Run

app = typer.Typer(help="Runs (training, gate runs, pipeline steps): list, show.", no_args_is_help=True)


def _summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "kind": run.kind, "name": run.name, "key": run.key, "state": run.state,
        "digest": run.digest, "owner": str(run.owner), "started_at": run.started_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
    }


@app.command("list")
def list_runs(
    kind: str = typer.Option(None, "--kind", help="Only runs of this kind (training, gate-run, ...)."),
    state: str = typer.Option(None, "--state", help="Only runs in this state (running, interrupted, succeeded, ...)."),
    since: str = typer.Option(None, "--since", help="Only runs started at or after this time (ISO; UTC if no zone)."),
    key: str = typer.Option(None, "--key", help="Only runs with this idempotency key."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Runs, oldest first, with their state as read now (interrupted: its owner process is gone)."""
    from rich.markup import escape
    from rich.table import Table

    runs = open_store(home).runs.list(kind=kind, state=state, since=parse_time(since, '--since', naive_is_utc=True),
                                      key=key)
    if as_json:
        print_json([_summary(r) for r in runs])
        return
    table = Table(title=f"{len(runs)} runs")
    # The id starts with the kind. Ids, states and times stay whole, so they read at a
    # glance and copy into 'factory runs show'; names fold.
    for col in ("id", "name", "state", "started", "last update"):
        table.add_column(col, no_wrap=col != "name", overflow="fold")
    for r in runs:
        table.add_row(r.id, escape(r.name or "-"), _state_text(r.state), f"{r.started_at:%Y-%m-%d %H:%M}",
                      f"{r.updated_at:%H:%M:%S}")
    console.print(table)


def _state_text(state: str) -> str:
    colour = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "cancelled": "dim"}.get(state)
    return f"[{colour}]{state}[/{colour}]" if colour else state


@app.command()
def show(run_id: str = typer.Argument(..., help="The run's id (see 'factory runs list')."), home: str = HomeOption,
         as_json: bool = JsonOption) -> None:
    """One run: what it was given, what happened, what it measured and what it made."""
    import json

    from rich.markup import escape
    from rich.table import Table

    store = open_store(home)
    run = store.runs.get(run_id)
    events, metrics, outputs = run.events(), run.metrics(), run.outputs()
    children = _child_runs(store, run)
    if as_json:
        print_json({
            **_summary(run), "config": run.config, "parents": list(run.parents), "outputs": outputs,
            "events": [e.__dict__ for e in events],
            "metrics": [{"step": m.step, "name": m.name, "value": m.value, "at": m.at} for m in metrics],
            "children": [_summary(c) for c in children],
        })
        return
    fields = [
        ("run", f"{run.id} ({run.kind}{', ' + escape(run.name) if run.name else ''})"),
        ("state", _state_text(run.state)),
        ("key", escape(run.key or "-")),
        ("digest", run.digest),
        ("owner", str(run.owner)),
        ("started", run.started_at.isoformat()),
        ("inputs", "\n         ".join(run.parents) or "-"),
        ("config", escape(json.dumps(run.config, sort_keys=True))),
    ]
    for label, value in fields:
        console.print(f"[bold]{label:<8}[/bold] {value}", highlight=False, soft_wrap=True)
    if outputs:
        table = Table(title="outputs")
        table.add_column("name")
        table.add_column("digest", overflow="fold")
        for name, digest in outputs.items():
            table.add_row(escape(name), digest)
        console.print(table)
    epochs = _epoch_table(metrics)
    if epochs is not None:
        console.print(epochs)
    elif metrics:
        latest: dict[str, tuple[int, float, int]] = {}
        for m in metrics:
            count = latest.get(m.name, (0, 0.0, 0))[2] + 1
            latest[m.name] = (m.step, m.value, count)
        table = Table(title="metrics (latest step)")
        for col in ("metric", "step", "value", "points"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for name, (step, value, count) in sorted(latest.items()):
            table.add_row(escape(name), str(step), f"{value:.6g}", str(count))
        console.print(table)
    if children:
        table = Table(title=f"child runs ({len(children)})")
        for col in ("id", "name", "state", "epochs", "last metrics"):
            table.add_column(col, overflow="fold")
        for child in children:
            points = child.metrics()
            last = max((m.step for m in points), default=None)
            shown = ", ".join(f"{m.name} {m.value:.4g}" for m in points if m.step == last and m.name != "epoch")
            epochs = max((m.value for m in points if m.name == "epoch"), default=None)
            table.add_row(child.id, escape(child.name or "-"), _state_text(child.state),
                          "-" if epochs is None else f"{epochs:g}", escape(shown) or "-")
        console.print(table)
    table = Table(title="events")
    for col in ("seq", "at", "state", "actor", "details"):
        table.add_column(col, overflow="fold")
    for e in events:
        table.add_row(str(e.seq), e.at, _state_text(e.state), escape(e.actor),
                      escape(json.dumps(e.details, sort_keys=True)) if e.details else "")
    console.print(table)


def _child_runs(store: Any, run: Run) -> list[Run]:
    """Runs whose parents include this one (a sweep's trials), oldest first."""
    found = []
    for digest in store.lineage.children(run.digest):
        artifact = store.artifacts.get(digest)
        if artifact.kind == "run" and "run_id" in artifact.metadata:
            found.append(store.runs.get(artifact.metadata["run_id"]))
    return sorted(found, key=lambda r: r.started_at)


def _epoch_table(metrics: list[Any]) -> Any:
    """A run that records an ``epoch`` metric (training): one row per epoch, a column per metric; else None."""
    from rich.markup import escape
    from rich.table import Table

    by_step: dict[int, dict[str, float]] = {}
    for m in metrics:
        by_step.setdefault(m.step, {})[m.name] = m.value
    if not by_step or not all("epoch" in values for values in by_step.values()):
        return None
    names = sorted({name for values in by_step.values() for name in values} - {"epoch"})
    table = Table(title=f"metrics per epoch ({len(by_step)})")
    for col in ("epoch", "step", *names):
        table.add_column(escape(col), justify="right")
    for step, values in sorted(by_step.items()):
        table.add_row(f"{values['epoch']:g}", str(step),
                      *(f"{values[n]:.6g}" if n in values else "-" for n in names))
    return table
