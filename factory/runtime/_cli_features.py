"""``factory features``: register views, list them, build training sets, materialize and look up."""

from __future__ import annotations

from datetime import datetime
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
    parse_time,
    plain,
    print_json,
    record_source,
    short_digest,
)

if TYPE_CHECKING:
    from factory.store import ViewVersion

AssumeUtcOption = typer.Option(False, "--assume-utc", help="Read timestamps without a time zone as UTC.")

app = typer.Typer(help="Feature views: register, list, historical (training sets), materialize, get-online.",
                  no_args_is_help=True)


def _time(text: str | None, option: str) -> datetime | None:
    return parse_time(text, option)


_MAX_VIEW_BYTES = 1 << 20


def _view_dict(v: ViewVersion) -> dict[str, Any]:
    return {"name": v.name, "digest": v.digest, **v.view.model_dump(mode="json", exclude={"name"})}


@app.command()
def register(
    path: Path = typer.Argument(..., help="The view as YAML or JSON (name, entities, timestamp, ttl, features, source)."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Register a feature view from YAML or JSON; its source may be a dataset NAME, NAME@N or digest."""
    from pydantic import ValidationError

    from factory.store import FeatureView

    from factory._untrusted import load_json, load_yaml

    if not path.is_file():
        fail(f"no file at {path}: give the view definition as a .yaml or .json file")
    if path.stat().st_size > _MAX_VIEW_BYTES:
        fail(f"{path} is larger than {_MAX_VIEW_BYTES:,} bytes: a view definition is a short mapping")
    load = load_yaml if path.suffix.lower() in (".yaml", ".yml") else load_json
    data = load(path.read_bytes(), what=str(path), max_bytes=_MAX_VIEW_BYTES)
    if not isinstance(data, dict):
        fail(f"{path} must hold one mapping (name, entities, timestamp, ttl, features, source)")
    store = open_store(home)
    if isinstance(data.get("source"), str):
        data["source"] = store.datasets.get(data["source"]).digest
    try:
        view = FeatureView.model_validate(data)
    except ValidationError as exc:
        fail(f"{path} is not a valid feature view: {'; '.join(e['loc'][0].__str__() + ': ' + e['msg'] for e in exc.errors())}")
    artifact = store.features.register(view)
    record_source(store, artifact.digest, path)
    if as_json:
        print_json({"name": view.name, "digest": artifact.digest, **view.model_dump(mode="json")})
        return
    console.print(f"registered {view.name} {artifact.digest}", highlight=False, soft_wrap=True)


@app.command("list")
def list_views(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Every feature view, latest version."""
    from rich.table import Table

    views = open_store(home).features.list()
    if as_json:
        print_json([_view_dict(v) for v in views])
        return
    table = Table(title="feature views")
    for col in ("name", "digest", "entities", "features", "ttl", "source"):
        table.add_column(col)
    for v in views:
        table.add_row(plain(v.name), short_digest(v.digest), plain(", ".join(v.view.entities)),
                      plain(", ".join(v.view.features)), str(v.view.ttl), short_digest(v.view.source))
    console.print(table)


@app.command()
def historical(
    entities: str = typer.Argument(..., help="Entity rows: a CSV/Parquet/Arrow file, or a dataset NAME[@N] or digest."),
    view: list[str] = typer.Option(..., "--view", "-v", help="A feature view (repeat for several)."),
    timestamp: str = typer.Option("event_timestamp", "--timestamp", help="The entity rows' time column."),
    name: str = typer.Option("historical-features", "--name", "-n", help="Dataset name for the result."),
    allow_backfill: bool = typer.Option(False, "--allow-backfill", help="Let values created after a row's time in."),
    engine: str = typer.Option("auto", "--engine", help="auto, local or ray."),
    assume_utc: bool = AssumeUtcOption,
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Join entity rows against views as of each row's time; records the result as a dataset version."""
    store = open_store(home)
    rows: Any = entities
    if Path(entities).is_file():
        from factory.store import read_table_file

        rows = read_table_file(entities)
    with err_console.status("point-in-time join"):
        result = store.features.get_historical_features(rows, view, timestamp=timestamp, allow_backfill=allow_backfill,
                                                        assume_utc=assume_utc, engine=engine, name=name)
    v = result.version
    info = {"digest": v.digest, "name": v.name, "version": v.version, "rows": v.num_rows, "views": list(result.views)}
    if as_json:
        print_json(info)
        return
    console.print(f"{v.name}@{v.version} {v.digest} ({v.num_rows:,} rows)", highlight=False, soft_wrap=True)


@app.command()
def materialize(
    name: str = typer.Argument(..., help="The feature view."),
    up_to: str = typer.Option(None, "--up-to", help="Load rows known at this time (ISO 8601). Default: now."),
    assume_utc: bool = AssumeUtcOption,
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Load a view into the online store, as known at --up-to."""
    store = open_store(home)
    with err_console.status(f"materializing {plain(name)}"):
        table = store.features.materialize(name, _time(up_to, "--up-to"), assume_utc=assume_utc)
    info = {"view": name, "entities": len(table), "steps": table.table.num_rows, "up_to": table.up_to.isoformat()}
    if as_json:
        print_json(info)
        return
    console.print(f"{name}: {info['entities']:,} entities up to {info['up_to']}", highlight=False)


def _key_part(text: str, column: str, t: Any) -> Any:
    """One key value typed from the command line as entity column ``column`` (of Arrow type ``t``) needs."""
    import pyarrow as pa

    if pa.types.is_integer(t):
        try:
            return int(text)
        except ValueError:
            fail(f"key {text!r} is not an integer, as entity column {column!r} ({t}) needs: give e.g. 42")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return text
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return text.encode()
    try:
        return pa.scalar(text).cast(t).as_py()
    except (pa.ArrowException, ValueError) as exc:
        fail(f"key {text!r} cannot be read as {t}, the type of entity column {column!r}: {exc}")


@app.command("get-online")
def get_online(
    name: str = typer.Argument(..., help="The feature view."),
    keys: list[str] = typer.Argument(..., help="Entity keys (for a composite key: comma-separated values)."),
    at: str = typer.Option(None, "--at", help="Serve as of this time (ISO 8601). Default: now."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Look up entity keys in the online store."""
    features = open_store(home).features
    table = features.online_table(name)
    types = [table.table.schema.field(e).type for e in table.header.entities]

    def parse(text: str) -> Any:
        parts = text.split(",") if len(types) > 1 else [text]
        if len(parts) != len(types):
            fail(f"view {name!r} has a key of {len(types)} columns: give KEY as {','.join(table.header.entities)}")
        values = [_key_part(part, column, t) for part, column, t in zip(parts, table.header.entities, types)]
        return values[0] if len(values) == 1 else tuple(values)

    parsed = [parse(k) for k in keys]
    values = features.get_online_features(name, parsed, at=_time(at, "--at"))
    if as_json:
        print_json([{"key": k, **v} for k, v in zip(keys, values)])
        return
    from rich.table import Table

    out = Table(title=plain(name))
    out.add_column("key")
    for f in table.header.features:
        out.add_column(plain(f))
    for key, row in zip(keys, values):
        out.add_row(plain(key), *("-" if row[f] is None else plain(row[f]) for f in table.header.features))
    console.print(out)


log_app = typer.Typer(help="The serving feature log: find a request's rows, optimize the log.", no_args_is_help=True)
app.add_typer(log_app, name="log")
LogOption = typer.Option("serving", "--log", help="The feature log's name.")


@log_app.command("find")
def log_find(
    request_id: str = typer.Argument(..., help="The request id."),
    log: str = LogOption,
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """The rows serving logged for one request (features served and the prediction)."""
    from factory.store import FeatureLog

    rows = FeatureLog(open_store(home), log).find(request_id).to_pylist()
    if not rows:
        fail(f"no rows for request {request_id!r} in feature log {log!r}: check the id (and --log)")
    if as_json:
        print_json(rows)
        return
    from rich.markup import escape
    from rich.table import Table

    out = Table(title=f"request {escape(request_id)}")
    for column in rows[0]:
        out.add_column(escape(column))
    for row in rows:
        out.add_row(*(escape("-" if v is None else str(v)) for v in row.values()))
    console.print(out)


@log_app.command("optimize")
def log_optimize(log: str = LogOption, home: str = HomeOption) -> None:
    """Compact the log's small fragments and bring its request_id index up to date."""
    from factory.store import FeatureLog

    with err_console.status(f"optimizing feature log {log}"):
        FeatureLog(open_store(home), log).optimize()
    console.print(f"feature log {log} optimized", highlight=False)
