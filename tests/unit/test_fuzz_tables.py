"""Fuzzing the table readers (CSV, Parquet, Arrow IPC) and what a dataset add does with what they read.

The property: a file is read (and then hashed or added), or refused with a
``FactoryError``; no other exception, no hang past the deadline, and nothing written
to the store when it is refused.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.errors import FactoryError
from factory.settings import Settings
from factory.store import Store, canonical_digest, read_table_file

FUZZ = settings(max_examples=60, deadline=10000, database=None, suppress_health_check=[HealthCheck.too_slow])

SAMPLE = pa.table({
    "id": [1, 2, 3],
    "s": ["a", None, "ccc"],
    "f": [1.5, None, -0.0],
    "l": [[1], None, []],
    "t": pa.array([1, 2, None], pa.timestamp("us", tz="UTC")),
})


def _parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(SAMPLE, buf)
    return buf.getvalue()


def _feather() -> bytes:
    buf = io.BytesIO()
    feather.write_feather(SAMPLE, buf)
    return buf.getvalue()


def _ipc_stream() -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SAMPLE.schema) as writer:
        writer.write_table(SAMPLE)
    return sink.getvalue().to_pybytes()


GOOD = {"x.parquet": _parquet(), "x.feather": _feather(), "x.arrow": _ipc_stream()}


@st.composite
def damaged(draw):
    """A good file of one format, cut short and with a few bytes overwritten."""
    name = draw(st.sampled_from(sorted(GOOD)))
    data = bytearray(GOOD[name])
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


csv_text = st.text(alphabet=st.sampled_from(list('ab1.-,"\n\r\t é\x00;')), max_size=200)
csv_bytes = st.binary(max_size=200)


def _add_or_refuse(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / name
        path.write_bytes(data)
        try:
            table = read_table_file(path)
        except FactoryError:
            table = None
        if table is not None:
            try:
                canonical_digest(table)
            except FactoryError:
                pass
        home = Path(work) / "home"
        store = Store(home, settings=Settings(home=str(home)))
        try:
            store.datasets.add(path, name="fuzz")
        except FactoryError:
            written = [p for p in home.rglob("*") if p.is_file()] if home.exists() else []
            assert written == [], f"a refused add wrote {written}"
        else:
            assert store.datasets.get("fuzz").num_rows == table.num_rows


@FUZZ
@given(case=damaged())
def test_damaged_parquet_and_arrow_files_are_read_or_refused(case):
    """Parquet, Feather and Arrow IPC files with bytes changed or cut: a table or a FactoryError, nothing written."""
    _add_or_refuse(*case)


@FUZZ
@given(data=csv_text.map(lambda t: t.encode("utf-8")) | csv_bytes)
def test_any_csv_is_read_or_refused(data):
    """Arbitrary CSV text or bytes: a table or a FactoryError, nothing written when refused."""
    _add_or_refuse("x.csv", data)


def test_a_feather_file_whose_list_offsets_overrun_its_values_is_refused(tmp_path):
    """A Feather file that decodes into a list column with offsets past its values is refused, not hashed."""
    import pytest

    buf = io.BytesIO()
    feather.write_feather(pa.table({"l": [[1], None, []]}), buf, compression="uncompressed")
    offsets = b"".join(int(v).to_bytes(4, "little") for v in (0, 1, 1, 1))
    data = buf.getvalue()
    assert data.count(offsets) == 1
    path = tmp_path / "x.feather"
    path.write_bytes(data.replace(offsets, b"".join(int(v).to_bytes(4, "little") for v in (0, 9, 9, 9))))
    with pytest.raises(FactoryError, match="cannot read"):
        read_table_file(path)
