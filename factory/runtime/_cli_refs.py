"""``factory refs``: list refs, show a ref's history, move a ref by compare-and-swap, protect refs."""

from __future__ import annotations

import typer

from factory.runtime._cli_common import HomeOption, JsonOption, console, open_store, plain, print_json, short_digest

app = typer.Typer(help="Refs (dataset names, model aliases): list, history, set, protect.", no_args_is_help=True)


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
    """Every move of one ref, refused ones included: when, who, from, to, why."""
    from rich.table import Table

    changes = open_store(home).refs.history(name, refused=True)
    if as_json:
        print_json([c.__dict__ for c in changes])
        return
    table = Table(title=f"history of {plain(name)}")
    for col in ("at", "actor", "from", "to", "reason"):
        table.add_column(col)
    for c in changes:
        style = "red" if c.refused else None
        to = "refused " + short_digest(c.new or "-") if c.refused else short_digest(c.new or "-")
        table.add_row(c.at, plain(c.actor), short_digest(c.old or "-"), to, plain(c.reason), style=style)
    console.print(table)


@app.command("set")
def set_ref(
    name: str,
    target: str = typer.Argument(..., help="Digest (or unique prefix) to point at."),
    expected: str = typer.Option(None, "--expect", help="Digest the ref must point at now ('none' if it must not exist)."),
    reason: str = typer.Option("", "--reason", help="Why, kept in the history."),
    home: str = HomeOption,
) -> None:
    """Move a ref, by compare-and-swap when --expect is given. You act as $FACTORY_ACTOR (else user@host)."""
    store = open_store(home)
    target = store.artifacts.resolve(target)
    kwargs = {}
    if expected is not None:
        kwargs["expected"] = None if expected.lower() == "none" else store.artifacts.resolve(expected)
    change = store.refs.set(name, target, reason=reason, **kwargs)
    console.print(f"{plain(name)}: {change.old or '-'} -> {change.new}", highlight=False)


@app.command()
def protect(
    pattern: str = typer.Argument(..., help="Refs to protect; '*' is one whole part, e.g. 'model/*/prod'."),
    actors: list[str] = typer.Option(..., "--actor", "-a", help="An actor who may move them (repeat for more)."),
    home: str = HomeOption,
) -> None:
    """Let only the given actors move refs matching PATTERN (changing a rule needs an actor it lists)."""
    rule = open_store(home).refs.protect(pattern, actors)
    console.print(f"{plain(rule.pattern)}: only {plain(', '.join(rule.actors))}", highlight=False)


@app.command()
def unprotect(pattern: str = typer.Argument(..., help="The pattern of the rule to remove."),
              home: str = HomeOption) -> None:
    """Remove the protection rule for PATTERN (only an actor it lists may)."""
    open_store(home).refs.unprotect(pattern)


@app.command()
def rules(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Every protection rule: which refs, who may move them, who set the rule and when."""
    from rich.table import Table

    found = open_store(home).refs.rules()
    if as_json:
        print_json([r.__dict__ for r in found])
        return
    table = Table(title="protected refs")
    for col in ("pattern", "actors", "set by", "at"):
        table.add_column(col)
    for r in found:
        table.add_row(plain(r.pattern), plain(", ".join(r.actors)), plain(r.updated_by), r.updated_at or "-")
    console.print(table)
