"""``factory contract``: validate, show and export model packages; package a fresh built-in model."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from factory.errors import FactoryError
from factory.runtime._cli_common import (
    HomeOption,
    JsonOption,
    console,
    err_console,
    fail,
    open_store,
    plain,
    print_json,
    short_digest,
)

if TYPE_CHECKING:
    from factory.contract import ValidationResult

app = typer.Typer(help="Model contracts and packages: validate, show, package a built-in model.", no_args_is_help=True)

_MARK = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]skip[/]"}
EXIT_CRASH = 4
log = logging.getLogger(__name__)


def _is_folder(source: str) -> bool:
    return Path(source).is_dir()


@app.command()
def validate(
    source: str = typer.Argument(..., help="A model digest (or unique prefix) in the store, or a package folder."),
    allow_code_mismatch: bool = typer.Option(
        False, "--allow-code-mismatch", help="Accept architecture code that differs from the packaged code digest."),
    runs: int = typer.Option(50, "--runs", min=3, help="Timed forward passes per batch size, at most."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Check a package against its contract: files, weights, architecture, forward passes, latency.

    Exit status: 0: the package satisfies its contract; 1: it violates it (the violations are
    listed); 2: bad input (no such digest or folder); 3: a system error (storage, retry);
    4: the validator crashed, so the package was not judged (a bug: rerun with -v for the traceback).
    """
    import factory.contract

    store = None if _is_folder(source) else open_store(home)
    try:
        result = factory.contract.validate(source, store=store, allow_code_mismatch=allow_code_mismatch, runs=runs)
    except FactoryError:
        raise
    except Exception as exc:  # anything else is the validator's own fault, never the package's verdict
        log.debug("the validator crashed", exc_info=True)
        err_console.print(plain(f"crashed: the validator failed on {source} ({type(exc).__name__}: {exc}); "
                                "the package was not judged. Rerun with -v for the traceback and report it"),
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CRASH) from None
    if as_json:
        print_json(result.to_dict())
    else:
        _print_result(result)
    if not result.ok:
        raise typer.Exit(1)


def _print_result(result: ValidationResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    checks = Table(title=escape(f"validation of {result.package_digest or result.source}"), title_justify="left")
    for col in ("check", "result", "detail"):
        checks.add_column(col)
    for check in result.checks:
        checks.add_row(escape(check.name), _MARK[check.passed], escape(check.detail))
    console.print(checks)
    if result.latency:
        lat = Table(title=f"latency (bound: p99 <= {result.p99_bound_ms:g} ms)", title_justify="left")
        for col in ("batch", "threads", "runs", "p50 ms", "p99 ms", "max ms"):
            lat.add_column(col, justify="right")
        for s in result.latency:
            lat.add_row(str(s.batch_size), str(s.threads), str(s.runs), f"{s.p50_ms:.3f}", f"{s.p99_ms:.3f}",
                        f"{s.max_ms:.3f}")
        console.print(lat)
    if result.violations:
        bad = Table(title=f"{len(result.violations)} violation(s)", title_justify="left", show_lines=True)
        for col in ("field", "expected", "actual", "message"):
            bad.add_column(col, overflow="fold")
        for v in result.violations:
            bad.add_row(escape(v.field), escape(v.expected), escape(v.actual), escape(v.message))
        console.print(bad)
        console.print(f"[red]FAILED[/]: {len(result.violations)} violation(s); validated in {result.duration_s:.3f} s")
    else:
        console.print(f"[green]ok[/]: {escape(result.model_name or '')} satisfies its contract; "
                      f"validated in {result.duration_s:.3f} s")


@app.command()
def show(
    digest: str = typer.Argument(..., help="A model digest (or unique prefix)."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """A package's contract, its Open Inference Protocol metadata, architecture and metrics."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from factory.contract import ArchitectureRef, Contract
    from factory.contract._files import ARCHITECTURE, CONTRACT, METRICS, read_from_store

    files = read_from_store(open_store(home), digest)
    contract = Contract.from_json(files.files[CONTRACT])
    arch = ArchitectureRef.model_validate_json(files.files[ARCHITECTURE])
    metrics = json.loads(files.files[METRICS])
    if as_json:
        print_json({
            "digest": files.digest,
            "contract": contract.model_dump(mode="json"),
            "contract_digest": contract.digest,
            "oip_metadata": contract.oip_metadata(),
            "architecture": arch.model_dump(mode="json"),
            "metrics": metrics,
            "files": dict(files.manifest),
        })
        return
    console.print(f"[bold]{escape(contract.name)}[/]  {files.digest}", highlight=False)
    console.print(escape(f"architecture {arch.label}  config {json.dumps(arch.config)}"), highlight=False)
    tensors = Table(title="inputs and outputs (Open Inference Protocol metadata)", title_justify="left")
    for col in ("", "name", "datatype", "shape", "notes"):
        tensors.add_column(col)
    for i in contract.inputs:
        notes = ", ".join(filter(None, ["nullable" if i.nullable else "",
                                        f"feature view {i.feature_view.name}" if i.feature_view else ""]))
        tensors.add_row("in", i.name, str(i.dtype), escape(str(list(i.shape))), escape(notes))
    for o in contract.outputs:
        notes = ", ".join(filter(None, [f"interval {o.interval.lower}..{o.interval.upper}" if o.interval else "",
                                        f"explanation {o.explanation}" if o.explanation else ""]))
        tensors.add_row("out", o.name, str(o.dtype), escape(str(list(o.shape))), escape(notes))
    console.print(tensors)
    r = contract.resources
    console.print(f"resources: {r.cpus:g} CPU, {r.gpus:g} GPU, {r.memory_mb} MiB; p99 <= {r.p99_latency_ms:g} ms; "
                  f"batch <= {r.max_batch_size}, wait {r.batch_wait_ms:g} ms", highlight=False)
    obs = contract.observability
    console.print(escape(f"observability: sample rate {obs.sample_rate:g}; "
                         f"drift on {list(obs.drift_features) or 'nothing'}"), highlight=False)
    for key, value in contract.provenance.model_dump().items():
        console.print(f"provenance.{key}: {value or '-'}", highlight=False)
    if metrics:
        console.print(escape("metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items())), highlight=False)


@app.command("package-example")
def package_example(
    arch: str = typer.Option("mlp-classifier", "--arch", help="A built-in: mlp-classifier or mlp-regressor."),
    in_features: int = typer.Option(4, "--in-features", min=1, help="Input values per row."),
    out_features: int = typer.Option(3, "--out-features", min=1, help="Classes (classifier) or targets (regressor)."),
    hidden: str = typer.Option("16,16", "--hidden", help="Hidden layer sizes, comma-separated."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights."),
    name: str = typer.Option("example-mlp", "--name", help="Model name in the contract."),
    p99_ms: float = typer.Option(50.0, "--p99-ms", help="The contract's p99 latency bound."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="The contract's maximum batch size."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Package a freshly initialised (untrained) built-in model, to try validate, show and export."""
    from pydantic import ValidationError

    from factory.contract import Contract, Resources, default_registry, package

    registry = default_registry()
    if arch not in ("mlp-classifier", "mlp-regressor"):
        fail(f"--arch {arch!r} is not a built-in: choose mlp-classifier or mlp-regressor")
    for option, value in (("--in-features", in_features), ("--out-features", out_features)):
        if value > _MAX_WIDTH:
            fail(f"{option} {value} is more than {_MAX_WIDTH:,}: an example model stays small")
    sizes = _hidden_sizes(hidden)
    if not math.isfinite(p99_ms) or p99_ms <= 0:
        fail(f"--p99-ms {p99_ms} must be a positive, finite number of milliseconds, e.g. 50")
    options = {"name": ("--name", name), "p99_latency_ms": ("--p99-ms", p99_ms),
               "max_batch_size": ("--max-batch", max_batch)}
    config = {"in_features": in_features, "out_features": out_features, "hidden": sizes}
    architecture = registry.get(arch)
    try:
        resources = Resources(p99_latency_ms=p99_ms, max_batch_size=max_batch)
        signature = architecture.expected(config)
        contract = Contract(
            name=name,
            description=f"An untrained {arch} (seed {seed}) packaged as an example.",
            inputs=signature.inputs,
            outputs=signature.outputs,
            resources=resources,
        )
    except ValidationError as exc:
        fail(_option_error(exc, options))
    model = architecture.build(config, seed=seed)
    pkg = package(open_store(home), model, contract, registry=registry)
    if as_json:
        print_json({"digest": pkg.digest, "name": name, "architecture": pkg.architecture.label})
    else:
        console.print(pkg.digest, highlight=False)


_MAX_WIDTH = 1 << 16


def _hidden_sizes(hidden: str) -> list[int]:
    try:
        sizes = [int(s) for s in hidden.split(",") if s.strip()]
    except ValueError:
        fail(f"--hidden {hidden!r} must be comma-separated integers, e.g. 16,16")
    if len(sizes) > 16 or not all(1 <= size <= _MAX_WIDTH for size in sizes):
        fail(f"--hidden {hidden!r} must be at most 16 sizes, each from 1 to {_MAX_WIDTH:,}, e.g. 16,16")
    return sizes


def _option_error(exc: Any, options: dict[str, tuple[str, object]]) -> str:
    """The first pydantic error as one line naming the command-line option it came from."""
    err = exc.errors(include_url=False)[0]
    field = next((str(part) for part in err["loc"] if str(part) in options), None)
    option, value = options.get(field, ("an option", None))
    return f"{option} {value!r}: {err['msg'].removeprefix('Value error, ')}"


@app.command()
def export(
    digest: str = typer.Argument(..., help="A model digest (or unique prefix)."),
    output: Path = typer.Option(..., "--output", "-o", help="A new (or empty) folder for the package files."),
    home: str = HomeOption,
) -> None:
    """Write a package's files and manifest.json to a folder (plain safetensors, JSON, README.md)."""
    from factory.contract import export as export_package

    dest = export_package(open_store(home), digest, output)
    console.print(f"wrote {len(list(dest.iterdir()))} files to {dest}", highlight=False)


@app.command()
def architectures(as_json: bool = JsonOption) -> None:
    """The installed architectures: built-ins and those from the factory.architectures entry points."""
    from rich.markup import escape
    from rich.table import Table

    from factory.contract import default_registry

    archs = list(default_registry())
    if as_json:
        print_json([{"name": a.name, "version": a.version, "task": a.task, "code_digest": a.code_digest,
                     "description": a.description} for a in archs])
        return
    table = Table(title="architectures")
    for col in ("name", "version", "task", "code digest", "description"):
        table.add_column(col)
    for a in archs:
        table.add_row(a.name, escape(a.version), a.task or "", short_digest(a.code_digest), escape(a.description))
    console.print(table)
