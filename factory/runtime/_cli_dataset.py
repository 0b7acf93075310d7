"""``factory dataset``: add a table as a dataset version, list names, show one version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from factory.runtime._cli_common import (
    HomeOption,
    JsonOption,
    console,
    err_console,
    fail,
    open_store,
    plain,
    print_json,
    record_source,
    short_digest,
)

if TYPE_CHECKING:
    from factory.store import DatasetVersion, Store

app = typer.Typer(help="Dataset versions: add, list, show.", no_args_is_help=True)


def _as_dict(store: Store, v: DatasetVersion) -> dict[str, Any]:
    artifact = store.artifacts.get(v.digest)
    return {
        "digest": v.digest,
        "name": v.name,
        "version": v.version,
        "rows": v.num_rows,
        "key": list(v.key),
        "schema": [{"name": c, "type": t} for c, t in v.schema],
        "parents": store.lineage.parents(v.digest),
        "lance": {"uri": v.uri, "version": v.lance_version},
        "created_at": v.created_at.isoformat(),
        "source": artifact.metadata.get("source"),
    }


@app.command()
def add(
    path: Path = typer.Argument(..., help="A CSV, Parquet or Arrow IPC (.arrow/.feather/.ipc) file."),
    name: str = typer.Option(..., "--name", "-n", help="The dataset name (letters, digits, '.', '_', '-')."),
    key: list[str] = typer.Option(
        [], "--key", "-k", help="A key column (repeat, or comma-separate). The key only orders rows canonically: "
        "it need not be unique, and rows with equal keys (ties) are ordered by the other columns. "
        "Default: the previous version's key."
    ),
    allow_schema_change: bool = typer.Option(
        False, "--allow-schema-change", help="Accept columns or types that differ from the current version."
    ),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Store a file as the new version of NAME; prints its digest and whether it is new.

    A key orders rows, it does not identify them: duplicate key values are kept, and the
    same rows give the same digest in any order.
    """
    from factory.store import check_dataset_name

    check_dataset_name(name)
    columns = _key_columns(key)
    store = open_store(home)
    before = store.refs.get(f"dataset/{name}")
    with err_console.status(f"adding {plain(path)} as dataset {plain(repr(name))}"):
        v = store.datasets.add(path, name=name, key=columns, allow_schema_change=allow_schema_change)
        record_source(store, v.digest, path)
    status = "unchanged" if v.digest == before else "new"
    if as_json:
        print_json({"status": status, **_as_dict(store, v)})
        return
    console.print(f"{status}: {v.name}@{v.version} {v.digest} ({v.num_rows:,} rows)", highlight=False, soft_wrap=True)


def _key_columns(options: list[str]) -> list[str]:
    """The column names in the --key options, each comma-separated; an empty one is refused, not dropped."""
    columns = []
    for option in options:
        parts = [part.strip() for part in option.split(",")]
        if not all(parts):
            fail(f"--key {option!r} has an empty column name: give column names separated by commas, e.g. --key id,ts")
        columns += parts
    return columns


@app.command("list")
def list_datasets(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Every dataset name with its number of versions and latest version."""
    from rich.table import Table

    store = open_store(home)
    rows = []
    for ref in store.refs.list("dataset/"):
        name = ref.name.removeprefix("dataset/")
        versions = store.datasets.versions(name)
        latest = next(v for v in versions if v.digest == ref.target)
        rows.append({"name": name, "versions": len(versions), "latest": latest.digest, "version": latest.version,
                     "rows": latest.num_rows, "updated": ref.updated_at})
    if as_json:
        print_json(rows)
        return
    table = Table(title="datasets")
    for col in ("name", "versions", "latest", "rows", "updated"):
        table.add_column(col, justify="right" if col in ("versions", "rows") else "left")
    for r in rows:
        table.add_row(plain(r["name"]), str(r["versions"]), f"@{r['version']} {short_digest(r['latest'])}",
                      f"{r['rows']:,}", r["updated"][:19])
    console.print(table)


@app.command()
def show(
    ref: str = typer.Argument(..., help="NAME (latest), NAME@VERSION, or a digest or unique prefix."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """One version: digest, rows, key, schema, parents and where Lance keeps it."""
    from rich.markup import escape
    from rich.table import Table

    store = open_store(home)
    info = _as_dict(store, store.datasets.get(ref))
    if as_json:
        print_json(info)
        return
    fields = [
        ("digest", info["digest"]),
        ("version", f"{info['name']}@{info['version']}"),
        ("rows", f"{info['rows']:,}"),
        ("key", ", ".join(info["key"]) or "(none: all columns)"),
        ("parents", "\n".join(info["parents"]) or "-"),
        ("lance", f"{info['lance']['uri']} (version {info['lance']['version']})"),
        ("created", info["created_at"]),
        ("source", info["source"] or "-"),
    ]
    for label, value in fields:
        # Plain lines, not a table, so a digest is never wrapped or cut when copied.
        pad = "\n" + " " * 9
        text = escape(str(value)).replace("\n", pad)
        console.print(f"[bold]{label:<8}[/bold] {text}", highlight=False, soft_wrap=True)
    schema = Table(title="schema")
    schema.add_column("column")
    schema.add_column("type")
    for column in info["schema"]:
        schema.add_row(escape(column["name"]), escape(column["type"]))
    console.print(schema)
