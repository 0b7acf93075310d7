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
                                                        engine=engine, name=name)
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
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Load a view into the online store, as known at --up-to."""
    store = open_store(home)
    with err_console.status(f"materializing {plain(name)}"):
        table = store.features.materialize(name, _time(up_to, "--up-to"))
    info = {"view": name, "entities": len(table), "steps": table.table.num_rows, "up_to": table.up_to.isoformat()}
    if as_json:
        print_json(info)
        return
    console.print(f"{name}: {info['entities']:,} entities up to {info['up_to']}", highlight=False)


@app.command("get-online")
def get_online(
    name: str = typer.Argument(..., help="The feature view."),
    keys: list[str] = typer.Argument(..., help="Entity keys (for a composite key: comma-separated values)."),
    at: str = typer.Option(None, "--at", help="Serve as of this time (ISO 8601). Default: now."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Look up entity keys in the online store."""
    import pyarrow as pa

    features = open_store(home).features
    table = features.online_table(name)
    types = [table.table.schema.field(e).type for e in table.header.entities]

    def parse(text: str) -> Any:
        parts = text.split(",") if len(types) > 1 else [text]
        if len(parts) != len(types):
            fail(f"view {name!r} has a key of {len(types)} columns: give KEY as {','.join(table.header.entities)}")
        values = []
        for part, t in zip(parts, types):
            try:
                values.append(int(part) if pa.types.is_integer(t) else part)
            except ValueError:
                fail(f"key {part!r} is not an integer, as column of type {t} needs")
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
