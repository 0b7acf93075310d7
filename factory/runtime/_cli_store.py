"""``factory store``: put, get and verify blobs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from factory.runtime import _prefetch
from factory.runtime._cli_common import (
    HomeOption,
    JsonOption,
    console,
    err_console,
    fail,
    open_store,
    plain,
    print_json,
    progress_bar,
    short_digest,
)

app = typer.Typer(help="Content-addressed blobs: put, get, verify.", no_args_is_help=True)


@app.command()
def put(
    path: Path = typer.Argument(..., help="File to store."),
    name: str = typer.Option(None, "--name", help="A name to record with the blob (default: the file name)."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Store a file; print its digest (sha256:<hex>)."""
    from factory.errors import InvalidInputError

    if not path.is_file():
        raise InvalidInputError(f"cannot put {path}: no such file (give the path of a readable file)")
    store = open_store(home)
    # The console script may have started storing this file already (see _prefetch).
    source = _prefetch.take(path, store.blobs) or path
    with progress_bar(f"put {path.name}", os.path.getsize(path), unit_bytes=True) as bar:
        artifact = store.put_blob(source, name=name or path.name, progress=bar.advance_task)
    if as_json:
        print_json({"digest": artifact.digest, "size": artifact.metadata["size"], "name": artifact.name})
    else:
        console.print(artifact.digest, highlight=False)


@app.command()
def get(
    digest: str = typer.Argument(..., help="Digest (or unique prefix) of the blob."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the blob (a file path)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite the output file if it exists."),
    home: str = HomeOption,
) -> None:
    """Write a blob to a file, verifying its digest as it streams; an existing file needs --force."""
    from factory.store import check_output_path, is_digest

    check_output_path(output)
    if output.exists() and not force:
        fail(f"{output} exists: pass --force to overwrite it, or choose another path")
    store = open_store(home)
    if not is_digest(digest):
        digest = store.artifacts.resolve(digest)
    with progress_bar(f"get {short_digest(digest)}", store.blobs.size(digest), unit_bytes=True) as bar:
        store.blobs.get_to(digest, output, progress=bar.advance_task)
    err_console.print(f"wrote {plain(output)}")


@app.command()
def verify(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Re-hash every blob; list the corrupt ones and exit 1 if there are any."""
    from rich.table import Table

    store = open_store(home)
    digests = list(store.blobs.digests())
    with progress_bar("verify", len(digests)) as bar:
        bad = []
        for digest in digests:
            problem = store.blobs.verify(digest)
            if problem is not None:
                bad.append(problem)
            bar.advance_task(1)
    if as_json:
        print_json({"checked": len(digests), "corrupt": [p.__dict__ for p in bad]})
    elif bad:
        table = Table(title=f"{len(bad)} corrupt of {len(digests)} blobs")
        for col in ("digest", "location", "problem"):
            table.add_column(col, overflow="fold")
        for p in bad:
            table.add_row(p.digest, p.location, p.reason)
        console.print(table)
    else:
        console.print(f"{len(digests)} blobs verified, none corrupt")
    if bad:
        raise typer.Exit(1)
