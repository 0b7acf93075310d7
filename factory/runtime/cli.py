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

# (area module, command name): each sub-app lives in factory/runtime/_cli_<area>.py.
_SUBAPPS = [
    ("_cli_store", "store"),
    ("_cli_dataset", "dataset"),
    ("_cli_refs", "refs"),
    ("_cli_contract", "contract"),
    ("_cli_features", "features"),
    ("_cli_embeddings", "embeddings"),
]

for _module, _name in _SUBAPPS:
    try:
        _sub = importlib.import_module(f"factory.runtime.{_module}")
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != f"factory.runtime.{_module}":
            raise
        continue
    app.add_typer(_sub.app, name=_name)

from factory.runtime import _cli_lineage, _cli_demo  # noqa: E402  (top-level verbs)

app.command("lineage")(_cli_lineage.lineage)
app.command("demo")(_cli_demo.demo)


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
