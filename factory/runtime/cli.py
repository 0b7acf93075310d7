"""The ``factory`` command line: one typer app with a sub-app per area.

Errors are mapped once, here: a ``UserError`` (bad input) prints one line and exits
2; a corrupt blob exits 1; a system error exits 3. Verbs import heavy libraries
only when they run, so ``factory --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from factory.errors import CorruptBlobError, FactoryError, UserError

__all__ = ["app", "main"]

app = typer.Typer(
    name="factory",
    help="factory: a Ray-native AI factory. Content-addressed store, datasets, features, models and their lineage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

# Each area lives in factory/runtime/_cli_<area>.py and exposes either ``app`` (a
# sub-app, mounted under ``GROUP``) or ``COMMANDS`` (top-level verbs by name), or both.
# Areas not built yet are skipped, so this list names every area once, in help order.
_AREAS = [
    "_cli_init",        # factory init
    "_cli_store",       # factory store ...
    "_cli_catalog",     # factory catalog migrate
    "_cli_dataset",     # factory dataset ...
    "_cli_refs",        # factory refs ...
    "_cli_lineage",     # factory lineage
    "_cli_contract",    # factory contract ...
    "_cli_features",    # factory features ...
    "_cli_embeddings",  # factory embeddings ...
    "_cli_runs",        # factory runs list|show
    "_cli_train",       # factory train, factory tune
    "_cli_gates",       # factory gates ..., factory attest ..., factory tickets
    "_cli_serve",       # factory serve deploy|list|delete
    "_cli_rollout",     # factory rollout ..., factory promote, factory rollback
    "_cli_pipeline",    # factory run, status, cancel
    "_cli_experiment",  # factory experiment ...
    "_cli_trace",       # factory trace, factory metrics
    "_cli_demo",        # factory demo
]


def _mount(module_name: str) -> None:
    try:
        module = importlib.import_module(f"factory.runtime.{module_name}")
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != f"factory.runtime.{module_name}":
            raise
        return
    sub = getattr(module, "app", None)
    if sub is not None:
        app.add_typer(sub, name=getattr(module, "GROUP", module_name.removeprefix("_cli_")))
    for name, command in getattr(module, "COMMANDS", {}).items():
        app.command(name)(command)
    for group, sub in getattr(module, "GROUPS", {}).items():
        app.add_typer(sub, name=group)


for _module in _AREAS:
    _mount(_module)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens (to stderr).")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    # Typer handles its own usage errors (exit 2) and exits; our errors come through.
    try:
        app(args=argv)
        rc = 0
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        rc = 2
    except CorruptBlobError as exc:
        sys.stderr.write(f"corrupt: {exc}\n")
        rc = 1
    except FactoryError as exc:
        sys.stderr.write(f"error ({exc.code}): {exc}\n")
        rc = 3
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 0
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
