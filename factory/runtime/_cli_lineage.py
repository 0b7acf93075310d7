"""``factory lineage DIGEST``: where an artifact came from, or what depends on it."""

from __future__ import annotations

import enum

import typer

from factory.runtime._cli_common import HomeOption, console, open_store, plain, print_json, short_digest


class Format(enum.StrEnum):
    tree = "tree"
    json = "json"
    openlineage = "openlineage"


def lineage(
    digest: str = typer.Argument(..., help="Digest (or unique prefix) of any artifact."),
    down: bool = typer.Option(False, "--down", help="Show what depends on it instead of where it came from."),
    depth: int = typer.Option(None, "--depth", min=1, help="Stop this many levels away."),
    fmt: Format = typer.Option(Format.tree, "--format", help="tree (readable), json, or openlineage (RunEvents, spec 2-0-2)."),
    home: str = HomeOption,
) -> None:
    """Print the lineage tree of an artifact (upstream by default)."""
    store = open_store(home)
    if fmt is Format.openlineage:
        print_json(store.lineage.openlineage_events(digest))
        return
    node = store.lineage.downstream(digest, depth) if down else store.lineage.upstream(digest, depth)
    if fmt is Format.json:
        print_json(_as_dict(node))
        return
    from rich.tree import Tree

    tree = Tree(_label(node))
    _grow(tree, node)
    console.print(tree)


def _label(node) -> str:
    a = node.artifact
    name = f" [bold]{plain(a.name)}[/bold]" if a.name else ""
    seen = " [dim](shown above)[/dim]" if node.seen else ""
    return (f"[cyan]{plain(a.kind)}[/cyan]{name} {short_digest(a.digest)} "
            f"[dim]{a.created_at:%Y-%m-%d %H:%M:%S}[/dim]{seen}")


def _grow(tree, node) -> None:
    for child in node.neighbours:
        _grow(tree.add(_label(child)), child)


def _as_dict(node) -> dict:
    a = node.artifact
    return {
        "digest": a.digest,
        "kind": str(a.kind),
        "name": a.name,
        "created_at": a.created_at.isoformat(),
        "producer": a.producer,
        "metadata": a.metadata,
        "neighbours": [_as_dict(n) for n in node.neighbours],
        "seen": node.seen,
    }
COMMANDS = {"lineage": lineage}
