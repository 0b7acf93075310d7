"""Reading tables: CSV, Parquet and Arrow IPC files by extension, Arrow tables, pandas, Arrow streams.

Every failure to read is an ``InvalidInputError`` naming the file and the format, never a
raw Arrow or codec error: a header that is not UTF-8, a malformed file, a value larger
than Arrow's CSV block (the block grows to fit instead).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from factory.errors import InvalidInputError
from factory.store._canonical import canonical_type

__all__ = ["read_table_file", "as_table"]

_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
_PARQUET = (".parquet", ".pq")
_IPC = (".arrow", ".feather", ".ipc")
_MAX_CSV_BLOCK = (1 << 31) - 1  # Arrow's block size is an int32


def read_table_file(path: str | os.PathLike[str]) -> pa.Table:
    """Read a CSV, Parquet or Arrow IPC (``.arrow``/``.feather``/``.ipc``) file, by extension."""
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith(_CSV):
        fmt = "CSV"
    elif lower.endswith(_PARQUET):
        fmt = "Parquet"
    elif lower.endswith(_IPC):
        fmt = "Arrow IPC"
    else:
        raise InvalidInputError(
            f"cannot tell the format of {path}: name it *.csv, *.parquet or *.arrow/*.feather/*.ipc"
        )
    if not path.is_file():
        raise InvalidInputError(f"no file at {path}: check the path")
    try:
        if fmt == "CSV":
            table = _read_csv(path)
        elif fmt == "Parquet":
            table = _read_parquet(path)
        elif lower.endswith(".feather"):
            import pyarrow.feather as feather

            table = feather.read_table(path)
        else:
            table = _read_ipc(path)
        try:
            names = table.column_names
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"{path} has column names that are not valid UTF-8: re-save it with UTF-8 column names"
            ) from None
        binary = [name for name, t in zip(names, table.schema.types) if pa.types.is_binary(t)]
        if fmt == "CSV" and binary:
            raise InvalidInputError(
                f"{path} is not valid UTF-8 text in column(s) {', '.join(binary)}: re-save it as UTF-8 CSV"
            )
        # A damaged file can decode into arrays whose offsets point past their data;
        # refuse it here, before anything hashes or writes it.
        table.validate(full=True)
        return table
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"cannot read {path} as {fmt}: {exc}; check that it is a valid {fmt} file") from exc


def _read_csv(path: Path) -> pa.Table:
    """A CSV file; a value larger than Arrow's read block (1 MiB) raises the block size instead of failing."""
    import pyarrow.csv as pacsv

    block = 1 << 20
    limit = min(path.stat().st_size + 1, _MAX_CSV_BLOCK)
    while True:
        try:
            return pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=block))
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block >= limit:
                raise
            block = min(block * 16, limit)


def _read_ipc(path: Path) -> pa.Table:
    """An Arrow IPC file, or failing that an Arrow IPC stream."""
    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source).read_all()


def _read_parquet(path: Path) -> pa.Table:
    """A Parquet file with the Arrow types its writer recorded, where Parquet could not hold them.

    Parquet has no second-resolution timestamps or times and no date64, so pyarrow writes
    ``timestamp[s]`` as ``timestamp[ms]``; casting back (only where exact) gives the same
    types, hence the same digest, as the table that was written.
    """
    import base64

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    recorded = (pq.ParquetFile(path).metadata.metadata or {}).get(b"ARROW:schema")
    if recorded is None:
        return table
    try:
        original = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(recorded)))
    except (pa.ArrowException, ValueError):
        return table
    for i, field in enumerate(table.schema):
        index = original.get_field_index(field.name)
        if index < 0:
            continue
        want = original.field(index).type
        try:
            if canonical_type(want, field.name) != canonical_type(field.type, field.name):
                table = table.set_column(i, field.name, table.column(i).cast(want, safe=True))
        except (pa.ArrowException, InvalidInputError):
            continue
    return table


def as_table(source: Any) -> tuple[pa.Table, str | None]:
    """A table and, for a file, its name, from a path, an Arrow table or any Arrow stream (pandas too)."""
    if isinstance(source, (str, os.PathLike)):
        return read_table_file(source), os.path.basename(os.fspath(source))
    if isinstance(source, pa.Table):
        return source, None
    if type(source).__module__.split(".")[0] == "pandas":
        return pa.Table.from_pandas(source, preserve_index=False), None
    if isinstance(source, pa.RecordBatch) or hasattr(source, "__arrow_c_stream__"):
        return pa.table(source), None
    raise InvalidInputError(f"cannot add a {type(source).__name__}: give a file path or a pyarrow.Table")
