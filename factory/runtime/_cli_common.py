"""What every CLI verb shares: the store, consoles, progress bars, tables, JSON output.

Only typer and rich are imported here; verbs import heavy libraries inside their
bodies, so ``factory --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from factory.errors import InvalidInputError

if TYPE_CHECKING:
    from rich.progress import Progress

    from factory.store import Store

console = Console()
err_console = Console(stderr=True)

HomeOption = typer.Option(None, "--home", help="Store root (a folder or s3://, gs:// URI). Default: $FACTORY_HOME or ./.factory", show_default=False)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
CatalogOption = typer.Option(None, "--catalog", help="The catalog: a SQLite file or a postgresql:// URL. Default: $FACTORY_CATALOG or <home>/catalog.db", show_default=False)


def open_store(home: str | None = None, catalog: str | None = None) -> Store:
    """The store at ``home`` (else $FACTORY_HOME), with ``catalog`` instead of $FACTORY_CATALOG if given."""
    from dataclasses import replace

    from factory.settings import Settings
    from factory.store import Store

    settings = Settings.from_env()
    if catalog is not None:
        settings = replace(settings, catalog=catalog)
    return Store(home, settings=settings)


def record_source(store: Store, digest: str, path: str | Path) -> None:
    """Record the file that artifact ``digest`` was made from as one of its parents (an
    ``external`` artifact: URI, size, SHA-256, mtime), once what was made from it is stored."""
    source = store.add_external(path)
    store.artifacts.add(store.artifacts.get(digest).kind, digest=digest, parents=[source.digest])


def short_digest(digest: str) -> str:
    """``sha256:`` and the first 12 hex characters: enough to tell blobs apart in a table."""
    return digest[: len("sha256:") + 12]


def plain(value: object) -> str:
    """User text (a name, a reason, a path, a value) for Rich: shown as typed, never read as markup."""
    return escape(str(value))


def fail(message: str) -> NoReturn:
    """Stop with a user error: one line, exit 2."""
    raise InvalidInputError(message)


def parse_time(text: str | None, option: str, *, naive_is_utc: bool = False) -> datetime | None:
    """An ISO 8601 time given on the command line; one without a zone is refused unless ``naive_is_utc``."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 time: write e.g. 2026-01-31T12:00:00Z")
    if when.tzinfo is None:
        if not naive_is_utc:
            fail(f"{option} {text!r} has no time zone: add one, e.g. Z or +00:00")
        when = when.replace(tzinfo=UTC)
    return when


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@contextmanager
def progress_bar(description: str, total: float | None, *, unit_bytes: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr, shown only when stderr is a terminal."""
    if not err_console.is_terminal:
        yield _SilentProgress()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = [TextColumn("[progress.description]{task.description}"), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if unit_bytes else [MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        progress.advance_task = lambda n: progress.advance(task, n)  # type: ignore[attr-defined]
        yield progress


class _SilentProgress:
    """What ``progress_bar`` yields when nobody can see it: every update is a no-op."""

    def advance_task(self, n: float) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def connect_ray(*, start: bool = False, required: bool = True) -> bool:
    """Connect to the running Ray cluster (RAY_ADDRESS, else address 'auto'); True if this process started one.

    With ``start``, an embedded cluster is started when none runs (its Serve proxies retry
    requests of lost replicas). Without it, no cluster is an error when ``required``, else
    False and nothing connected (check ``ray.is_initialized()``).
    """
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address="auto", log_to_driver=False, configure_logging=False)
        return False
    except ConnectionError:
        if not start:
            if required:
                fail("no Ray cluster is running: start one with 'ray start --head' (or set RAY_ADDRESS), then retry")
            return False
    import os

    from factory.serve import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # its Serve proxy retries requests of lost replicas
    ray.init(log_to_driver=False, include_dashboard=False, configure_logging=False)
    return True
