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
    with progress_bar(f"put {plain(path.name)}", os.path.getsize(path), unit_bytes=True) as bar:
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
def verify(
    deep: bool = typer.Option(False, "--deep", help="Also read every dataset version back and recompute its digest."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-hash every blob and dataset file, and check everything the catalog refers to is there.

    Lists what is missing, unreadable or corrupt and exits 1 if anything is; dataset
    versions whose files were never hashed (written by an older factory) are listed as
    not verified. A home that does not exist exits 2.
    """
    store = open_store(home)
    with progress_bar("verify", None) as bar:
        report = store.verify(deep=deep, progress=bar.advance_task)
    problems = report.problems
    if as_json:
        blobs = [p for p in problems if p.what == "blob"]
        print_json({"checked": report.blobs, **report.to_dict(),
                    "corrupt": [{"digest": p.digest, "location": p.location, "reason": p.detail, "problem": p.problem}
                                for p in blobs]})
    else:
        corrupt_blobs = sum(p.what == "blob" and p.problem == "corrupt" for p in problems)
        summary = (f"{corrupt_blobs} corrupt of {report.blobs} blobs, {report.count('missing')} missing, "
                   f"{report.count('unreadable')} unreadable, {report.count('corrupt') - corrupt_blobs} corrupt "
                   f"dataset file(s) or rows; checked {report.artifacts} artifacts and {report.dataset_files} "
                   "dataset files" + (f", re-hashed {report.deep_datasets} dataset versions" if deep else ""))
        if problems:
            # Plain lines, not a table, so no digest or path is ever wrapped or cut when copied.
            console.print(summary, highlight=False, soft_wrap=True)
            for p in problems:
                console.print(f"[bold red]{p.problem}[/] {p.what} {p.digest}\n    at {plain(p.location)}\n"
                              f"    {plain(p.detail)}", highlight=False, soft_wrap=True)
        else:
            console.print(f"{report.blobs} blobs, {report.artifacts} artifacts and {report.dataset_files} dataset "
                          f"files verified, none missing or corrupt" + (f"; {report.deep_datasets} dataset versions "
                                                                         "re-hashed" if deep else ""),
                          highlight=False)
        if report.unverified:
            console.print(f"{len(report.unverified)} dataset version(s) were written before factory recorded file "
                          "hashes, so their files are not verified"
                          + ("" if deep else " (verify --deep checks their content)") + ": "
                          + ", ".join(short_digest(d) for d in report.unverified), highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
