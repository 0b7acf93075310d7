"""``factory refs``: list refs, show a ref's history, move a ref by compare-and-swap."""

from __future__ import annotations

import typer

from factory.runtime._cli_common import HomeOption, JsonOption, console, open_store, plain, print_json, short_digest

app = typer.Typer(help="Refs (dataset names, model aliases): list, history, set.", no_args_is_help=True)


@app.command("list")
def list_refs(prefix: str = typer.Argument("", help="Only refs starting with this."), home: str = HomeOption,
              as_json: bool = JsonOption) -> None:
    """Every ref and the digest it points at."""
    from rich.table import Table

    refs = open_store(home).refs.list(prefix)
    if as_json:
        print_json([r.__dict__ for r in refs])
        return
    table = Table(title="refs")
    for col in ("name", "target", "updated"):
        table.add_column(col)
    for r in refs:
        table.add_row(plain(r.name), r.target, r.updated_at)
    console.print(table)


@app.command()
def history(name: str, home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Every move of one ref: when, who, from, to, why."""
    from rich.table import Table

    changes = open_store(home).refs.history(name)
    if as_json:
        print_json([c.__dict__ for c in changes])
        return
    table = Table(title=f"history of {plain(name)}")
    for col in ("at", "actor", "from", "to", "reason"):
        table.add_column(col)
    for c in changes:
        table.add_row(c.at, plain(c.actor), short_digest(c.old or "-"), short_digest(c.new or "-"), plain(c.reason))
    console.print(table)


@app.command("set")
def set_ref(
    name: str,
    target: str = typer.Argument(..., help="Digest (or unique prefix) to point at."),
    expected: str = typer.Option(None, "--expect", help="Digest the ref must point at now ('none' if it must not exist)."),
    reason: str = typer.Option("", "--reason", help="Why, kept in the history."),
    home: str = HomeOption,
) -> None:
    """Move a ref, by compare-and-swap when --expect is given."""
    store = open_store(home)
    target = store.artifacts.resolve(target)
    kwargs = {}
    if expected is not None:
        kwargs["expected"] = None if expected.lower() == "none" else store.artifacts.resolve(expected)
    change = store.refs.set(name, target, reason=reason, **kwargs)
    console.print(f"{plain(name)}: {change.old or '-'} -> {change.new}", highlight=False)
