"""``factory train CONFIG.yaml`` and ``factory tune CONFIG.yaml``: train or sweep, then package.

Both print a line per epoch (per trial result for a sweep) on stderr while they run,
and a final table on stdout: the package's digest and candidate ref, the digests it
was made of, and its metrics. Ray is joined at ``--address`` (or ``$RAY_ADDRESS``), or
started locally for the command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import HomeOption, JsonOption, console, err_console, open_store, print_json

if TYPE_CHECKING:
    from factory.train import EpochReport, SweepResult, TrainResult

AddressOption = typer.Option(None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start one here).")
CpusOption = typer.Option(None, "--num-cpus", min=0.1, help="CPUs of a locally started Ray (default: all).")
StorageOption = typer.Option(None, "--storage", help="Where Ray keeps checkpoints (default: <home>/train or <home>/tune).")


def _epoch_line(report: EpochReport) -> None:
    if report.resumed_from_step is not None:
        err_console.print(f"[yellow]resumed from the checkpoint at step {report.resumed_from_step}[/yellow]")
    if not report.end_of_epoch:
        return
    shown = "  ".join(f"{k} {v:.4g}" for k, v in report.metrics.items() if k not in ("epoch", "step"))
    mark = "  [dim]checkpoint[/dim]" if report.checkpoint else ""
    err_console.print(f"epoch {int(report.epoch)}/{report.epochs}  {shown}{mark}", highlight=False)


def _result_rows(result: TrainResult) -> list[tuple[str, str]]:
    rows = [
        ("model", result.name),
        ("package", result.model),
        ("candidate ref", result.candidate),
        ("weights", result.weights),
        ("config", result.config),
        ("dataset", result.dataset),
        ("code", result.code + ("  (uncommitted changes)" if result.code_dirty else "")),
        ("environment", result.environment),
        ("run", result.run or "-"),
        ("final checkpoint", result.checkpoint or "-"),
    ]
    rows += [(name, f"{value:.6g}") for name, value in sorted(result.metrics.items())]
    if result.reused:
        rows.append(("reused", "an identical run finished before (--force trains again)"))
    else:
        rows.append(("restarts", str(result.restarts)))
    rows.append(("wall time", f"{result.wall_s:.1f} s"))
    return rows


def _print_result(title: str, result: TrainResult) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in _result_rows(result):
        table.add_row(name, value)
    console.print(table)
    console.print(f"inspect it: factory contract show {result.model}", highlight=False, soft_wrap=True)


@contextmanager
def _ray_session(as_json: bool = False) -> Iterator[None]:
    """Shut Ray down afterwards if the command started or joined it.

    With ``--json`` whatever Ray prints on stdout meanwhile (Ray Tune's experiment
    table, its progress reports) goes to stderr, so stdout is the JSON alone.
    """
    import ray

    was_connected = ray.is_initialized()
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet:
            yield
    finally:
        if not was_connected and ray.is_initialized():
            ray.shutdown()


def train_command(
    config: Path = typer.Argument(..., help="The training config (YAML)."),
    home: str | None = HomeOption,
    force: bool = typer.Option(False, "--force", help="Train even if an identical run already finished."),
    address: str | None = AddressOption,
    num_cpus: float | None = CpusOption,
    storage: str | None = StorageOption,
    as_json: bool = JsonOption,
) -> None:
    """Train a model from a config and register its package as a candidate."""
    from factory.train import load_config, train

    cfg = load_config(config)
    store = open_store(home)
    with _ray_session(as_json):
        result = train(cfg, store=store, force=force, storage_path=storage, entry=(str(config),),
                       progress=None if as_json else _epoch_line, address=address, num_cpus=num_cpus)
    if as_json:
        print_json(dataclasses.asdict(result))
    else:
        _print_result(f"factory train {cfg.name}", result)


def _trial_line(event: dict[str, Any]) -> None:
    if "train_loss" not in event:
        return
    shown = "  ".join(f"{k} {v:.4g}" for k, v in event.items() if k not in ("trial", "epoch", "step"))
    err_console.print(f"trial {event['trial']}  epoch {int(event.get('epoch', 0))}  {shown}", highlight=False)


def _print_sweep(result: SweepResult) -> None:
    from rich.table import Table

    table = Table(title="trials")
    for column in ("trial", "params", "epochs", "metrics", "status"):
        table.add_column(column)
    for trial in result.trials:
        best = " *" if trial.trial_id == result.best_trial else ""
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(trial.metrics.items()))
        table.add_row(trial.trial_id + best, params, str(trial.epochs), metrics, trial.status)
    console.print(table)
    _print_result(f"best trial {result.best_trial}", result.best)


def tune_command(
    config: Path = typer.Argument(..., help="The sweep config (YAML): 'train' and 'space'."),
    home: str | None = HomeOption,
    address: str | None = AddressOption,
    num_cpus: float | None = CpusOption,
    storage: str | None = StorageOption,
    as_json: bool = JsonOption,
) -> None:
    """Sweep a config's hyperparameters with ASHA and package the best trial."""
    from factory.train import load_sweep, tune

    sweep = load_sweep(str(config))
    store = open_store(home)
    with _ray_session(as_json):
        result = tune(sweep, store=store, storage_path=storage, entry=(str(config),),
                      progress=None if as_json else _trial_line, address=address, num_cpus=num_cpus)
    if as_json:
        print_json(dataclasses.asdict(result))
    else:
        _print_sweep(result)


COMMANDS = {"train": train_command, "tune": tune_command}
