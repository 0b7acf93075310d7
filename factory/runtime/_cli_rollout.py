"""``factory rollout start|status|pause|resume``, ``factory promote``, ``factory rollback``.

``factory rollout start`` hosts the rollout in its own process until it ends: it moves
the model servers' traffic through their deployment records and reads their signals
from the cluster's collector (a connected Ray cluster: RAY_ADDRESS, else 'auto'), or
from a Prometheus server with ``--prometheus``. Every other verb works on the rollout's
run in the store: one that acts on a rollout hosted by another live process queues a
command for it; one whose host is gone takes the run over and acts here (``resume``
then hosts it here until it ends).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import (
    HomeOption,
    JsonOption,
    connect_ray,
    console,
    err_console,
    fail,
    open_store,
    plain,
    print_json,
)

if TYPE_CHECKING:
    from factory.serve import RolloutConfig, RolloutStatus
    from factory.store import Run, Store

GROUP = "rollout"
app = typer.Typer(help="Progressive delivery: shadow, canary steps, promotion or rollback on measured signals.",
                  no_args_is_help=True)

RunOption = typer.Option(None, "--run", help="The rollout's run id (default: the latest live rollout).")
ModelOption = typer.Option(None, "--model", help="Only rollouts of this model.")
EnvOption = typer.Option(None, "--env", help="Only rollouts in this environment.")
ReasonOption = typer.Option(..., "--reason", "-r", help="Why: recorded on the run with who you are ($FACTORY_ACTOR).")
PrometheusOption = typer.Option(None, "--prometheus", help="Read the signals from the Prometheus server at this URL "
                                "(default: the cluster's collector, which every model server reports to).")
MetricsPortOption = typer.Option(None, "--metrics-port", min=0, max=65535, help="Serve the rollout's metrics "
                                 "(step, weight per version, shadow agreement, analyses, outcomes) in Prometheus "
                                 "format on this port while hosting it.")
_MAX_CONFIG_BYTES = 1 << 16


def _exporter(port: int | None) -> dict[str, Any]:
    """``{"metrics": RolloutMetrics}`` served over HTTP on ``port`` (all interfaces, like Ray's exporter), or {}."""
    if port is None:
        return {}
    from prometheus_client import start_http_server

    from factory.serve import RolloutMetrics

    metrics = RolloutMetrics()
    try:
        start_http_server(port, registry=metrics.registry)
    except OSError as exc:
        fail(f"--metrics-port {port}: cannot listen there ({exc.strerror or exc}); choose a free port")
    console.print(f"rollout metrics: http://{_hostname()}:{port}/metrics", highlight=False)
    return {"metrics": metrics}


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _parts(store: Store, config: dict[str, Any], prometheus: str | None, *,
           host: bool) -> tuple[dict[str, Any], bool]:
    """What a rollout in this process talks to (the model servers' traffic and signals), and whether it could
    host the rollout (a deployment to move and signals to read).

    With ``host``, a missing deployment or cluster is an error. Without it (an operator's
    verb that may take a run over for one action), the traffic changes are recorded on the
    run only and the signals read as unavailable, which only holds a rollout.
    """
    from factory.errors import InvalidInputError, NotFoundError
    from factory.serve import MemorySignals, MemoryTraffic, serving_parts

    try:
        parts = serving_parts(store, config, prometheus=prometheus)
    except (NotFoundError, InvalidInputError) as exc:
        if host:
            raise
        console.print(f"note: {exc}; traffic changes are recorded on the run only", highlight=False)
        return {"traffic": MemoryTraffic(announce=True), "signals": MemorySignals()}, False
    if prometheus:
        return parts, True
    import ray

    connect_ray(required=host)
    return parts, ray.is_initialized()


def _config(path: Path | None, overrides: dict[str, Any]) -> RolloutConfig:
    from pydantic import ValidationError

    from factory._untrusted import load_json, load_yaml
    from factory.serve import RolloutConfig

    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            fail(f"no file at {path}: give the rollout config as a .yaml or .json file")
        load = load_yaml if path.suffix.lower() in (".yaml", ".yml") else load_json
        data = load(path.read_bytes(), what=str(path), max_bytes=_MAX_CONFIG_BYTES)
        if not isinstance(data, dict):
            fail(f"{path} must hold one mapping of rollout settings (steps, window_s, min_requests, ...)")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RolloutConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        fail(f"the rollout config is not valid: {problems}")


@app.command()
def start(
    digest: str = typer.Argument(..., help="The candidate package's digest (or a unique prefix)."),
    env: str = typer.Option("prod", "--env", help="The environment whose ref the candidate would replace."),
    steps: str = typer.Option(None, "--steps", help="Canary steps in percent, e.g. 5,25,50,100."),
    window: str = typer.Option(None, "--window", help="Analysis window per stage, e.g. 10s, 2m."),
    min_requests: int = typer.Option(None, "--min-requests", help="Requests the candidate must answer per window."),
    no_shadow: bool = typer.Option(False, "--no-shadow", help="Skip the shadow stage."),
    config: Path = typer.Option(None, "--config", help="Rollout settings as YAML or JSON (flags override them)."),
    prometheus: str = PrometheusOption,
    metrics_port: int = MetricsPortOption,
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Roll a candidate out against what model/<name>/<env> serves now, hosting it here until it ends.

    Shadow, then each canary step, each judged over its window; then promoted (exit 0) or
    rolled back (exit 1). Promotion moves the protected ref model/<name>/<env> as you
    ($FACTORY_ACTOR): host rollouts as the controller's actor or a listed release manager.
    Ctrl-C stops hosting and leaves the rollout resumable ('factory rollout resume').
    """
    from factory.serve import Rollout, parse_duration, parse_steps, rollout_spec

    overrides = {"steps": parse_steps(steps) if steps else None,
                 "window_s": parse_duration(window, "--window") if window else None,
                 "min_requests": min_requests, "shadow": False if no_shadow else None}
    rollout_config = _config(config, overrides)
    store = open_store(home)
    spec = rollout_spec(store, digest, env, rollout_config)
    parts, _ = _parts(store, spec.model_dump(mode="json"), prometheus, host=True)
    rollout = Rollout.begin(store, spec, **parts, **_exporter(metrics_port))
    if as_json:
        print_json({"run": rollout.run.id, "model": spec.model, "env": env, "candidate": spec.candidate,
                    "incumbent": spec.incumbent, "stage": rollout.state.stage, "weight": rollout.state.weight})
    else:
        console.print(f"rollout {rollout.run.id}: {plain(spec.model)} {spec.candidate_version} against "
                      f"{spec.incumbent_version} in {plain(env)}; hosting it here until it ends (Ctrl-C leaves it "
                      "resumable)", highlight=False)
    _drive(rollout, quiet=as_json)


def _drive(rollout: Any, *, quiet: bool = False) -> None:
    """Host ``rollout`` here until it ends, showing its status; exit 1 when it was rolled back."""
    from contextlib import nullcontext

    from rich.live import Live

    from factory.serve import drive, rollout_status

    try:
        with nullcontext() if quiet else Live(console=console, refresh_per_second=2, transient=False) as live:
            drive(rollout, on_tick=None if live is None else
                  (lambda r: live.update(_render(rollout_status(r.run, time.time())))))
    except KeyboardInterrupt:
        err_console.print(f"stopped hosting {rollout.run.id}; it is resumable with 'factory rollout resume --run "
                          f"{rollout.run.id} --reason ...'", highlight=False)
        raise typer.Exit(130) from None
    final = rollout_status(rollout.run.refresh(), time.time())
    if quiet:
        print_json(_status_json(final))
    else:
        console.print(_render(final))
    if final.state.outcome != "promoted":
        raise typer.Exit(1)


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    return {"pct": f"{100 * value:.2f} %", "ms": f"{value:.1f} ms", "n": f"{value:,.0f}", "w": f"{value:g} %"}[kind]


def _render(status: RolloutStatus) -> Any:
    from rich.console import Group
    from rich.table import Table

    spec = status.spec
    table = Table(title=f"rollout {status.run_id}: {plain(spec.model)} in {plain(spec.env)}")
    for col in ("role", "version", "weight", "requests", "error rate", "p99"):
        table.add_column(col, justify="left" if col in ("role", "version") else "right")
    for row in status.rows:
        table.add_row(row.role, row.version, _fmt(row.weight, "w"), _fmt(row.requests, "n"),
                      _fmt(row.error_rate, "pct"), _fmt(row.p99_ms, "ms"))
    left = "" if status.time_left_s is None else f", {status.time_left_s:.0f} s left in the window"
    lines = [table, f"[bold]stage[/bold] {plain(status.headline)}{left}"]
    last = status.state.last
    if last:
        lines.append(f"[bold]last analysis[/bold] {plain(last.get('verdict', ''))}: {plain(last.get('summary', ''))}")
    return Group(*lines)


def _status_json(status: RolloutStatus) -> dict[str, Any]:
    s = status.state
    return {"run": status.run_id, "run_state": status.run_state, "model": status.spec.model, "env": status.spec.env,
            "candidate": status.spec.candidate, "incumbent": status.spec.incumbent, "stage": s.stage,
            "stage_name": status.stage_name, "passed": s.passed, "paused": s.paused, "blocked": s.blocked,
            "outcome": s.outcome, "note": s.note, "time_left_s": status.time_left_s, "headline": status.headline,
            "versions": [row.__dict__ for row in status.rows], "last_analysis": s.last}


@app.command()
def status(run: str = RunOption, model: str = ModelOption, env: str = EnvOption,
           watch: bool = typer.Option(False, "--watch", help="Refresh every second until the rollout ends."),
           home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """The rollout's versions, weights, error rates and p99, its stage and the time left."""
    from factory.serve import find_rollout, rollout_status, rollouts

    store = open_store(home)
    live = bool(rollouts(store, model=model, env=env, live=True))  # the live one, else the latest that ended
    found = find_rollout(store, run, model=model, env=env, live=live)
    if as_json:
        print_json(_status_json(rollout_status(found, time.time())))
        return
    if not watch:
        console.print(_render(rollout_status(found, time.time())))
        return
    from rich.live import Live

    try:
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                current = rollout_status(found.refresh(), time.time())
                live.update(_render(current))
                if current.state.ended:
                    break
                time.sleep(1.0)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _act(action: str, found: Run, reason: str, store: Store, prometheus: str | None = None, *,
         host: bool = False) -> None:
    """Carry out ``action``: queued for the live host, else here (and, with ``host``, host it on here)."""
    from factory.serve import operate, promote_by_hand

    parts, wired = _parts(store, found.config, prometheus, host=False)
    if action == "promote":
        rollout = promote_by_hand(store, found, reason, **parts)
    else:
        rollout = operate(store, found, action, reason, **parts)
    if rollout is None:
        console.print(f"{action}: queued for the process hosting {found.id}; it acts at its next tick",
                      highlight=False)
        return
    state = rollout.state
    now = state.outcome or ("paused" if state.paused else "running")
    console.print(f"{action}: done here, no process was hosting {found.id}; it is now {now}", highlight=False)
    if host and not state.ended:
        if wired:
            _drive(rollout)
        else:
            console.print(f"no process hosts {found.id}: run 'factory rollout resume --run {found.id} --reason ...' "
                          "where it reaches the cluster (or with --prometheus URL) to host it", highlight=False)


@app.command()
def pause(reason: str = ReasonOption, run: str = RunOption, model: str = ModelOption, env: str = EnvOption,
          home: str = HomeOption) -> None:
    """Hold the rollout at its current weight (a failing analysis still rolls it back)."""
    from factory.serve import find_rollout

    store = open_store(home)
    _act("pause", find_rollout(store, run, model=model, env=env, live=True), reason, store)


@app.command()
def resume(reason: str = ReasonOption, run: str = RunOption, model: str = ModelOption, env: str = EnvOption,
           prometheus: str = PrometheusOption, metrics_port: int = MetricsPortOption, home: str = HomeOption) -> None:
    """Go on from where the rollout paused; a rollout no process hosts is hosted here until it ends."""
    from factory.serve import find_rollout, rollout_status, take_over

    store = open_store(home)
    found = find_rollout(store, run, model=model, env=env, live=True)
    if rollout_status(found, time.time()).state.paused:
        _act("resume", found, reason, store, prometheus, host=found.state == "interrupted")
    elif found.state == "interrupted":
        _drive(take_over(store, found, **_parts(store, found.config, prometheus, host=True)[0],
                         **_exporter(metrics_port)))
    else:
        fail(f"rollout {found.id} is not paused ({found.state}): nothing to resume")


def promote(digest: str = typer.Argument(..., help="The candidate being rolled out (digest or unique prefix)."),
            reason: str = ReasonOption, home: str = HomeOption) -> None:
    """Promote a candidate now: move model/<name>/<env> to it as you ($FACTORY_ACTOR), a release manager."""
    from factory.serve import find_rollout

    store = open_store(home)
    _act("promote", find_rollout(store, candidate=store.artifacts.resolve(digest), live=True), reason, store)


def rollback(reason: str = ReasonOption, run: str = RunOption, model: str = ModelOption, env: str = EnvOption,
             home: str = HomeOption) -> None:
    """Roll the live rollout back now: all traffic to the incumbent, the window's figures kept as evidence."""
    from factory.serve import find_rollout

    store = open_store(home)
    _act("rollback", find_rollout(store, run, model=model, env=env, live=True), reason, store)


COMMANDS = {"promote": promote, "rollback": rollback}

