"""``factory experiment start|list|show``: isolated namespaces with pinned dependencies, sampled
dataset versions and tracking, acting as ``experiment:NAME`` (which may not move staging or prod)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import CatalogOption, HomeOption, JsonOption, console, fail, open_store, plain, \
    print_json, short_digest

if TYPE_CHECKING:
    from factory.runtime.experiment import Experiment

app = typer.Typer(help="Experiments: an isolated Ray namespace, pinned dependencies, sampled datasets, tracking.",
                  no_args_is_help=True)


def _summary(exp: Experiment) -> dict[str, Any]:
    return {"name": exp.name, "namespace": exp.namespace, "actor": exp.actor, "runtime_env": exp.runtime_env,
            "datasets": dict(exp.datasets), "run": exp.run_id}


def _show(exp: Experiment) -> None:
    console.print(f"experiment [bold]{plain(exp.name)}[/bold] ({exp.run_id})")
    console.print(f"  Ray namespace  {exp.namespace}")
    console.print(f"  acts as        {plain(exp.actor)} (cannot move model/*/staging or model/*/prod)")
    console.print(f"  runtime_env    {plain(exp.runtime_env or '{}')}")
    for source, digest in sorted(exp.datasets.items()):
        console.print(f"  sample of {plain(source)}  {short_digest(digest)}")
    console.print(f"\n  export FACTORY_ACTOR={plain(exp.actor)}\n"
                  f"  python: exp = factory.runtime.get_experiment(store, {exp.name!r}); exp.connect(); "
                  f"with exp.track(store, 'trial-1') as run: ...")


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            fail(f"--env {pair!r}: write NAME=VALUE")
        out[name] = value
    return out


@app.command()
def start(
    name: str = typer.Argument(..., help="The experiment's name (lowercase letters, digits, '-')."),
    dataset: list[str] = typer.Option([], "--dataset", "-d", help="A dataset (NAME or NAME@V) to sample; repeat."),
    fraction: float = typer.Option(None, "--fraction", help="The share of rows each sample keeps (0-1]."),
    rows: int = typer.Option(None, "--rows", help="The rows each sample keeps."),
    seed: int = typer.Option(0, "--seed", help="The sample's seed: the same seed, the same rows."),
    pip: list[str] = typer.Option([], "--pip", help="A pinned dependency (NAME==VERSION); repeat."),
    env: list[str] = typer.Option([], "--env", help="An environment variable NAME=VALUE for its workers; repeat."),
    home: str = HomeOption,
    catalog: str = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Start an experiment (the same settings again: the same experiment)."""
    from factory.runtime.experiment import start_experiment

    exp = start_experiment(open_store(home, catalog), name, datasets=dataset, fraction=fraction, rows=rows, seed=seed,
                           pip=pip, env_vars=_env(env))
    print_json(_summary(exp)) if as_json else _show(exp)


@app.command("list")
def list_command(home: str = HomeOption, catalog: str = CatalogOption, as_json: bool = JsonOption) -> None:
    """Every experiment, by name."""
    from factory.runtime.experiment import list_experiments

    found = list_experiments(open_store(home, catalog))
    if as_json:
        print_json([_summary(e) for e in found])
        return
    for exp in found:
        console.print(f"{plain(exp.name)}  {exp.namespace}  {len(exp.datasets)} sample(s)  {exp.run_id}")


@app.command()
def show(name: str = typer.Argument(...), home: str = HomeOption, catalog: str = CatalogOption,
         as_json: bool = JsonOption) -> None:
    """One experiment: namespace, environment, samples, and how to use it."""
    from factory.runtime.experiment import get_experiment

    exp = get_experiment(open_store(home, catalog), name)
    print_json(_summary(exp)) if as_json else _show(exp)
