"""``factory trace REQUEST_ID`` and ``factory metrics``: a prediction's whole story, and the factory's velocity."""

from __future__ import annotations

from pathlib import Path

import typer

from factory.runtime._cli_common import CatalogOption, HomeOption, JsonOption, console, open_store, plain, print_json


def trace_command(
    request_id: str = typer.Argument(..., help="The request id (OIP 'id', or the x-request-id response header)."),
    model: str | None = typer.Option(None, "--model", help="Search only this model's inference log."),
    home: str | None = HomeOption,
    catalog: str | None = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """From a logged prediction to its model, gates, training run and data, in one view."""
    from factory.runtime._trace import trace

    found = trace(open_store(home, catalog), request_id, model=model)
    if as_json:
        print_json(found.to_json())
        return
    print_trace(found)


def print_trace(found) -> None:
    """The trace as one tree: the request, the model and its gates, the run, the data."""
    from rich.tree import Tree

    m = found.model
    root = Tree(f"[bold]request {plain(found.request_id)}[/bold] [dim]({plain(found.log)}, "
                f"{len(found.rows)} row(s))[/dim]")
    row = found.rows[0]
    root.add(f"answered at {plain(row.get('ts'))} in {row.get('latency_ms', 0):.1f} ms: "
             f"{plain(row.get('prediction'))}")
    model_node = root.add(f"[cyan]model[/cyan] [bold]{plain(m['name'])}[/bold] {m['digest']} "
                          f"(version {plain(m.get('version'))})")
    gates = model_node.add(f"[cyan]gates[/cyan] ({len(found.gates)} attestations)")
    for g in found.gates:
        verdict = {"pass": "[green]pass[/green]", "fail": "[red]fail[/red]"}.get(g["verdict"], plain(g["verdict"]))
        check = "verified in the log" if g["verified"] else f"[red]{plain(g['problem'])}[/red]"
        gates.add(f"{plain(g['policy'])}: {verdict}  attestation {g['attestation'][:23]}... "
                  f"log index {g['log_index']} ({check})")
    if found.run:
        run = model_node.add(f"[cyan]training run[/cyan] {plain(found.run.get('run_id'))} "
                             f"({plain(found.run.get('state', '?'))}, started {plain(found.run.get('started_at', '?'))})")
        if found.config:
            c = found.config
            run.add(f"config {c['digest']}: {plain(c.get('architecture'))}, hyperparameters "
                    f"{plain(c.get('hyperparameters'))}, seed {plain(c.get('seed'))}")
        if found.code:
            run.add(f"code {found.code['digest']} (commit {plain(found.code.get('commit'))})")
        if found.environment:
            run.add(f"environment {found.environment['digest']} ({plain(found.environment.get('python'))}, "
                    f"{found.environment.get('distributions')} distributions)")
    if found.training_set:
        ts = found.training_set
        data = model_node.add(f"[cyan]training set[/cyan] {plain(ts['name'])} {ts['digest']} ({ts.get('rows')} rows)")
        for view in found.feature_views:
            data.add(f"feature view {plain(view['name'])} {view['digest']} over {plain(view.get('source'))}")
        for ds in found.datasets:
            data.add(f"source dataset {plain(ds['name'])} {ds['digest']} ({ds.get('rows')} rows)")
    console.print(root, highlight=False)


def metrics_command(
    env: str = typer.Option("prod", "--env", help="The environment production means."),
    prometheus: bool = typer.Option(False, "--prometheus", help="Print Prometheus text format (for a textfile "
                                                                 "collector or a scrape)."),
    out: Path | None = typer.Option(None, "--out", help="Write the Prometheus text to this file instead."),
    home: str | None = HomeOption,
    catalog: str | None = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Velocity: experiments per production model, cycle time p50/p95, promotion friction, gate false negatives."""
    from rich.table import Table

    from factory.runtime._velocity import to_prometheus, velocity

    v = velocity(open_store(home, catalog), env=env)
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(to_prometheus(v))
        tmp.replace(out)  # a textfile collector never reads half a file
        console.print(f"wrote {plain(out)}", highlight=False)
        return
    if prometheus:
        typer.echo(to_prometheus(v), nl=False)
        return
    if as_json:
        print_json(v.to_json())
        return
    table = Table(title=f"Velocity ({plain(env)})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("experiments (model packages)", v.experiments),
        ("models that reached production", v.in_production),
        ("experiments per production model", v.experiments_per_production),
        ("cycle time p50 (commit to first production inference)", _seconds(v.cycle_p50_s)),
        ("cycle time p95", _seconds(v.cycle_p95_s)),
        ("promotion friction (first gate run failed)", _share(v.promotion_friction, v.friction_failed_first,
                                                              v.friction_candidates)),
        ("gate false-negative rate (rolled back after passing gates)",
         _share(v.gate_false_negative_rate, v.rolled_back_after_gates, v.gated_rollouts)),
    ]
    for name, value in rows:
        table.add_row(name, "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)


def _seconds(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _share(value: float | None, part: int, whole: int) -> str | None:
    return None if value is None else f"{value:.0%} ({part} of {whole})"


COMMANDS = {"trace": trace_command, "metrics": metrics_command}
