"""``factory embeddings``: import, list, show, search, tag and index embedding collections."""

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
    import numpy as np

    from factory.store import EmbeddingVersion

app = typer.Typer(help="Embedding collections: import, list, show, search, tag, index.", no_args_is_help=True)


def _split(spec: str) -> tuple[str, str | None]:
    name, _, version = spec.partition("@")
    return name, version or None


def _as_dict(v: EmbeddingVersion) -> dict[str, Any]:
    return {
        "digest": v.digest,
        "name": v.name,
        "version": v.version,
        "count": v.count,
        "dim": v.dim,
        "metric": v.metric,
        "id_type": v.id_type,
        "columns": [{"name": c, "type": t} for c, t in v.columns],
        "encoder": v.encoder.to_json() if v.encoder else None,
        "index": v.index.to_json() if v.index else None,
        "lance": {"uri": v.uri, "version": v.lance_version},
        "created_at": v.created_at.isoformat(),
    }


def _index_text(v: EmbeddingVersion) -> str:
    if v.index is None:
        return "none (exact search)"
    i = v.index
    return (f"{i.type}, {i.num_partitions} partitions, nprobes={i.nprobes}, refine_factor={i.refine_factor}, "
            f"recall@{i.k}={i.recall}")


@app.command("list")
def list_collections(home: str = HomeOption, as_json: bool = JsonOption) -> None:
    """Every collection with its latest version, size and index."""
    from rich.table import Table

    store = open_store(home)
    rows = [_as_dict(store.embeddings.get(name)) for name in store.embeddings.names()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="embedding collections")
    for col in ("name", "latest", "rows", "dim", "metric", "index"):
        table.add_column(col, justify="right" if col in ("rows", "dim") else "left")
    for r in rows:
        table.add_row(plain(r["name"]), f"@{r['version']} {short_digest(r['digest'])}", f"{r['count']:,}",
                      str(r["dim"]), plain(r["metric"]), plain(r["index"]["type"]) if r["index"] else "-")
    console.print(table)


@app.command()
def show(
    spec: str = typer.Argument(..., help="NAME (latest) or NAME@VERSION (number, tag or digest)."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """One version: digest, size, schema, encoder, index; then the collection's versions and tags."""
    from rich.markup import escape
    from rich.table import Table

    store = open_store(home)
    name, version = _split(spec)
    v = store.embeddings.get(name, version)
    versions = store.embeddings.versions(name)
    tags = store.embeddings.tags(name)
    if as_json:
        print_json({**_as_dict(v), "tags": tags, "history": [x.digest for x in versions]})
        return
    fields = [
        ("digest", v.digest),
        ("version", f"{v.name}@{v.version}"),
        ("rows", f"{v.count:,}"),
        ("vectors", f"{v.dim}-d, {v.metric}, id {v.id_type}"),
        ("columns", ", ".join(f"{c} ({t})" for c, t in v.columns) or "-"),
        ("encoder", str(v.encoder) if v.encoder else "-"),
        ("index", _index_text(v)),
        ("lance", f"{v.uri} (version {v.lance_version})"),
        ("tags", ", ".join(f"{t} -> {short_digest(d)}" for t, d in sorted(tags.items())) or "-"),
    ]
    for label, value in fields:
        console.print(f"[bold]{label:<8}[/bold] {escape(str(value))}", highlight=False, soft_wrap=True)
    table = Table(title="versions")
    for col in ("version", "digest", "rows", "created"):
        table.add_column(col)
    for x in versions:
        table.add_row(str(x.version), short_digest(x.digest), f"{x.count:,}", x.created_at.isoformat()[:19])
    console.print(table)


def _read_vectors(path: Path) -> np.ndarray:
    """Query vectors from .npy (no pickle), .json (a list or a list of lists) or whitespace-separated text."""
    import json

    import numpy as np

    if not path.is_file():
        fail(f"{path} is not a file: give a .npy, .json or text file of query vectors")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".json":
            return np.asarray(json.loads(path.read_text()), dtype=np.float32)
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        return np.asarray(rows[0] if len(rows) == 1 else rows, dtype=np.float32)
    except (ValueError, json.JSONDecodeError) as exc:
        fail(f"cannot read query vectors from {path}: {exc}")


@app.command()
def search(
    spec: str = typer.Argument(..., help="NAME or NAME@VERSION (number, tag or digest)."),
    vector_file: Path = typer.Option(None, "--vector-file", help="Query vector(s): .npy, .json or text."),
    text: list[str] = typer.Option([], "--text", "-t", help="Query text (repeat for several); needs the collection's encoder."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    filter: str = typer.Option(None, "--filter", "-f", help="SQL predicate over the metadata, e.g. \"year > 2020\"."),
    exact: bool = typer.Option(None, "--exact/--index", help="Force exact search, or demand the index. Default: by size."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """The K nearest rows to each query, nearest first."""
    from rich.markup import escape
    from rich.table import Table

    from factory.store import encoder_for

    if (vector_file is None) == (not text):
        fail("give either --vector-file or --text")
    store = open_store(home)
    name, version = _split(spec)
    v = store.embeddings.get(name, version)
    if text:
        if v.encoder is None:
            fail(f"{name!r} records no encoder, so texts cannot be encoded: use --vector-file")
        query: Any = text
        encoder = encoder_for(v.encoder)
    else:
        query, encoder = _read_vectors(vector_file), None
    hits = store.embeddings.search(name, query, k, version=v.digest, filter=filter, exact=exact, encoder=encoder)
    results = hits if isinstance(hits, list) else [hits]
    if as_json:
        print_json([{"exact": h.exact, "version": h.version, "rows": h.rows.to_pylist()} for h in results])
        return
    for number, h in enumerate(results, 1):
        table = Table(title=f"query {number}: {plain(name)}@{v.version} ({'exact' if h.exact else 'index'})")
        for col in h.rows.column_names:
            table.add_column(col)
        for row in h.rows.to_pylist():
            table.add_row(*(f"{x:.4f}" if isinstance(x, float) else escape(str(x)) for x in row.values()))
        console.print(table)


@app.command()
def tag(
    spec: str = typer.Argument(..., help="NAME@VERSION to tag (number, tag or digest; NAME alone: latest)."),
    tag_name: str = typer.Argument(..., metavar="TAG", help="The tag (starts with a letter)."),
    move: bool = typer.Option(False, "--move", help="Move the tag if it already names another version."),
    home: str = HomeOption,
) -> None:
    """Name a version; refs embeddings/NAME/TAG. Moving a tag (e.g. 'serving') swaps a service's corpus."""
    store = open_store(home)
    name, version = _split(spec)
    v = store.embeddings.tag(name, version, tag_name, move=move)
    console.print(f"{name}/{tag_name} -> {name}@{v.version} {v.digest}", highlight=False, soft_wrap=True)


@app.command()
def index(
    name: str = typer.Argument(..., help="The collection: its latest version is indexed."),
    index_type: str = typer.Option(None, "--type", help="IVF_PQ or IVF_HNSW_SQ (default: by size; none under 50k rows)."),
    recall: float = typer.Option(0.95, "--recall", help="Target recall@10 the search settings are tuned to."),
    home: str = HomeOption,
) -> None:
    """Build a vector index on the latest version and tune it to the target recall."""
    store = open_store(home)
    with err_console.status(f"indexing {plain(repr(name))}"):
        v = store.embeddings.build_index(name, index_type=index_type, target_recall=recall)
    console.print(f"{name}@{v.version}: {_index_text(v)}", highlight=False, soft_wrap=True)


@app.command("import")
def import_file(
    path: Path = typer.Argument(..., help="A Parquet or Arrow IPC (.arrow/.feather/.ipc) file."),
    name: str = typer.Option(..., "--name", "-n", help="The collection (created if new, every other column as metadata)."),
    id_col: str = typer.Option("id", "--id-col", help="The column holding row ids."),
    vector_col: str = typer.Option("vector", "--vector-col", help="The column holding the vectors."),
    metric: str = typer.Option("cosine", "--metric", help="cosine, l2 or dot (new collections only)."),
    upsert: bool = typer.Option(False, "--upsert", help="Replace rows whose id is already there."),
    home: str = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Add the rows of a file to a collection as a new version."""
    import pyarrow as pa

    table = _read_table(path)
    for col in (id_col, vector_col):
        if col not in table.column_names:
            fail(f"{path} has no column {col!r} (columns: {', '.join(table.column_names)}): set --id-col/--vector-col")
    table = table.rename_columns([
        "id" if c == id_col else "vector" if c == vector_col else c for c in table.column_names
    ])
    store = open_store(home)
    emb = store.embeddings
    if name not in emb.names():
        vtype = table.schema.field("vector").type
        if not (pa.types.is_fixed_size_list(vtype) or pa.types.is_list(vtype) or pa.types.is_large_list(vtype)):
            fail(f"column {vector_col!r} is {vtype}, not a list of floats")
        first = table.column("vector").drop_null()
        dim = vtype.list_size if pa.types.is_fixed_size_list(vtype) else (len(first[0]) if len(first) else 0)
        id_type = "int64" if pa.types.is_integer(table.schema.field("id").type) else "string"
        columns = pa.schema([f for f in table.schema if f.name not in ("id", "vector")])
        emb.create(name, dim, id_type=id_type, metric=metric, columns=columns)
    with err_console.status(f"importing {plain(path)} into {plain(repr(name))}"):
        v = emb.upsert(name, table) if upsert else emb.add(name, table)
        record_source(store, v.digest, path)
    if as_json:
        print_json(_as_dict(v))
        return
    console.print(f"{name}@{v.version} {v.digest} ({v.count:,} rows)", highlight=False, soft_wrap=True)


def _read_table(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import feather

    if not path.is_file():
        fail(f"{path} is not a file: give a Parquet or Arrow IPC file")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pq.read_table(path)
        if path.suffix in (".arrow", ".feather", ".ipc"):
            return feather.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        fail(f"cannot read {path}: {exc}")
    fail(f"{path.suffix or path.name!r} is not a supported file type: use .parquet or .arrow/.feather/.ipc")
