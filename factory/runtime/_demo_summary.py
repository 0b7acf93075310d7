"""The demo's closing summary: digests, gate results, rollout timelines, velocity, timings, the endpoint."""

from __future__ import annotations



from rich.table import Table

from factory.runtime._cli_common import plain

__all__ = ["print_summary", "timeline_rows"]


def timeline_rows(outcome) -> list[tuple[float, str, str]]:
    """(seconds since the rollout started, event, detail) for each event of a rollout."""
    rows = []
    for event in outcome.events:
        name = event.get("event")
        if not name:
            continue
        t = float(event.get("t", outcome.started)) - outcome.started
        detail = []
        if "stage" in event:
            detail.append(f"stage {event['stage']}")
        traffic = event.get("traffic") or {}
        weights = traffic.get("weights") if isinstance(traffic, dict) else None
        if weights:
            detail.append(" / ".join(f"{v} {w:g} %" for v, w in weights.items()))
        if event.get("reason"):
            detail.append(str(event["reason"]))
        rows.append((t, name, "; ".join(detail)))
    return rows


def print_summary(console, cycle) -> None:
    from factory.runtime._velocity import velocity

    store = cycle.store
    console.rule("[bold]summary")

    digests = Table(title="Digests", show_lines=False)
    digests.add_column("what")
    digests.add_column("digest", overflow="fold")
    for ref in store.refs.list("dataset/"):
        digests.add_row(plain(ref.name), ref.target)
    for label in ("baseline", "candidate", "faulty"):
        made = cycle.made.get(label)
        if made is not None:
            digests.add_row(f"model ({label})", made.model)
    prod = store.refs.get(f"model/{cycle.model}/prod")
    digests.add_row(f"model/{cycle.model}/prod", prod or "-")
    console.print(digests)

    gates = Table(title="Prod gates")
    gates.add_column("model")
    policies: list[str] = []
    for run in cycle.gates.values():
        for outcome in run.outcomes:
            if outcome.policy not in policies:
                policies.append(outcome.policy)
    for policy in policies:
        gates.add_column(policy)
    for model, run in cycle.gates.items():
        results = {o.policy: o for o in run.outcomes}
        gates.add_row(model[7:19], *[("[green]pass[/green]" if results[p].passed else "[red]FAIL[/red]")
                                     if p in results else "-" for p in policies])
    console.print(gates)

    for outcome in cycle.rollouts:
        table = Table(title=f"Rollout of the {outcome.label} ({outcome.candidate[7:19]}): {outcome.state}")
        table.add_column("t (s)", justify="right")
        table.add_column("event")
        table.add_column("detail", overflow="fold")
        for t, name, detail in timeline_rows(outcome):
            table.add_row(f"{t:.1f}", name, plain(detail))
        console.print(table)

    v = velocity(store)
    metrics = Table(title="Velocity (factory metrics)")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for name, value in v.to_json().items():
        metrics.add_row(name, "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value))
    console.print(metrics)

    timings = Table(title="Timings")
    timings.add_column("phase")
    timings.add_column("seconds", justify="right")
    for name, seconds in cycle.timings.items():
        timings.add_row(plain(name), f"{seconds:.1f}")
    console.print(timings)

    if cycle.endpoint:
        console.print("\n[bold]The live endpoint[/bold] (while this process serves; --keep-serving keeps it up):")
        console.print(f"  {plain(cycle.endpoint['curl'])}", highlight=False, soft_wrap=True)
        console.print(f"  factory metrics --home {plain(store.home)}", highlight=False, soft_wrap=True)
        found = traced_request(cycle)
        if found is not None:
            from factory.runtime._cli_trace import print_trace

            console.print(f"  factory trace {found.request_id} --home {plain(store.home)}", highlight=False,
                          soft_wrap=True)
            print_trace(found)


def traced_request(cycle):
    """The trace of one request the promoted model answered and serving logged (None if none is logged yet)."""
    from factory.runtime._trace import trace
    from factory.store.features import FeatureLog

    load = cycle.made.get("load")
    prod = cycle.store.refs.get(f"model/{cycle.model}/prod")
    if load is None or prod is None:
        return None
    try:
        logged = set(FeatureLog(cycle.store, f"inference-{cycle.model}").read().column("request_id").to_pylist())
    except Exception:  # nothing logged yet
        return None
    for request_id in load.request_ids.get(prod[7:19], []):
        if request_id in logged:
            return trace(cycle.store, request_id, model=cycle.model)
    return None

