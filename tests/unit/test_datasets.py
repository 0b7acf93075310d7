"""Dataset versions in Lance: add, read back exactly, share storage, refuse bad input.

Every test runs twice: on a local folder and on S3 (moto's server).
"""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from factory.errors import InvalidInputError, NotFoundError, SchemaChangeError
from factory.store import ArtifactKind, canonical_digest
from factory.store import _fs
from factory.store.datasets import DatasetMeta

pytestmark = pytest.mark.catalogs


@pytest.fixture
def store(any_store):
    """The store of each test here: a local home, then an S3 home."""
    return any_store


def _rows(start: int, n: int, seed: int = 0) -> pa.Table:
    """Rows ``start..start+n`` of one fixed table per seed (so _rows(0, 110) extends _rows(0, 100))."""
    rng = np.random.default_rng(seed)
    size = 100_000
    table = pa.table(
        {
            "id": np.arange(size),
            "amount": rng.normal(100, 20, size).round(2),
            "qty": rng.integers(0, 50, size).astype(np.int32),
            "city": pa.array(rng.choice(["Oslo", "Lima", "Pune", "Kyiv"], size)),
        }
    )
    return table.slice(start, n)


def _every_type() -> pa.Table:
    return pa.table(
        {
            "i8": pa.array([1, None, 3], pa.int8()),
            "u64": pa.array([2**63, 2, None], pa.uint64()),
            "f16": pa.array(np.array([1.5, -0.0, np.nan], dtype=np.float16)),
            "f32": pa.array([-0.0, None, float("nan")], pa.float32()),
            "b": pa.array([True, None, False]),
            "s": pa.array(["a", None, ""]),
            "bin": pa.array([b"x", None, b""]),
            "d32": pa.array([datetime.date(2020, 1, 1), None, datetime.date(2021, 1, 1)]),
            "d64": pa.array([datetime.date(2020, 1, 1)] * 3, pa.date64()),
            "ts": pa.array([1, 2, None], pa.timestamp("us", tz="UTC")),
            "t32": pa.array([1, 2, 3], pa.time32("s")),
            "dur": pa.array([1, 2, 3], pa.duration("ms")),
            "dec": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-4.56")], pa.decimal128(10, 2)),
            "fsb": pa.array([b"ab", b"cd", None], pa.binary(2)),
            "l": pa.array([[1, None], None, []], pa.large_list(pa.int64())),
            "ls": pa.array([["a"], None, ["b", None]], pa.list_(pa.string())),
            "fsl": pa.array([[1.0, 2.0], None, [3.0, None]], pa.list_(pa.float64(), 2)),
            "ll": pa.array([[[1], [2, 3]], None, [[]]], pa.list_(pa.list_(pa.int32()))),
            "dict": pa.array(["x", "y", "x"]).dictionary_encode(),
            "nul": pa.array([None, None, None], pa.null()),
        }
    )


def _bytes(store, uri: str) -> int:
    from pyarrow import fs as pafs

    filesystem, path = _fs.filesystem(uri, store.settings)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return sum(i.size for i in infos if i.type == pafs.FileType.File)


def _lance(store, uri: str) -> lance.LanceDataset:
    return lance.dataset(uri, storage_options=store.storage_options)


def _exact(store, v) -> bool:
    """The version reads back as exactly its content: the same canonical digest."""
    return canonical_digest(store.datasets.read(v), key=v.key) == v.digest


def test_add_then_read_gives_back_the_same_content(store):
    """A table of every supported type reads back with the digest it was stored under."""
    v = store.datasets.add(_every_type(), name="types")
    assert v.version == 1 and v.num_rows == 3 and v.name == "types"
    assert _exact(store, v)
    assert dict(v.schema)["ts"] == "timestamp[us, tz=UTC]"
    assert store.artifacts.get(v.digest).kind == ArtifactKind.DATASET
    assert store.refs.get("dataset/types") == v.digest


def test_versions_are_numbered_and_found_every_way(store):
    """name, name@N, name@digest, a digest and a digest prefix all find the right version."""
    v1 = store.datasets.add(_rows(0, 100), name="sales", key=["id"])
    v2 = store.datasets.add(_rows(0, 110), name="sales", key=["id"])
    assert [v.version for v in store.datasets.versions("sales")] == [1, 2]
    assert store.datasets.get("sales") == v2
    assert store.datasets.get("sales@1") == v1
    assert store.datasets.get(f"sales@{v1.digest[7:20]}") == v1
    assert store.datasets.get(v1.digest) == v1
    assert store.datasets.get(v2.digest[:20]) == v2
    assert store.datasets.names() == ["sales"]
    assert store.datasets.lance("sales@1").count_rows() == 100


@pytest.mark.parametrize("ref", ["nope", "sales@3", "sales@0", "nope@1", "sha256:" + "0" * 64])
def test_unknown_versions_are_not_found(store, ref):
    """Unknown names, version numbers and digests raise NotFoundError."""
    store.datasets.add(_rows(0, 10), name="sales")
    store.datasets.add(_rows(0, 11), name="sales")
    with pytest.raises(NotFoundError):
        store.datasets.get(ref)


def test_same_content_again_is_a_no_op(store, tmp_path):
    """The same rows from another file format, in another order, change nothing at all."""
    t = _rows(0, 200)
    v1 = store.datasets.add(t, name="sales", key=["id"])
    pq.write_table(t.take(np.arange(199, -1, -1)), tmp_path / "again.parquet")
    lance_before = _lance(store, v1.uri).version
    again = store.datasets.add(tmp_path / "again.parquet", name="sales", key=["id"])
    assert again == v1
    assert _lance(store, v1.uri).version == lance_before
    assert len(store.refs.history("dataset/sales")) == 1


def test_appending_rows_shares_storage(store):
    """A version adding 1 % rows appends only those rows: the Lance data grows ~1 %, not 100 %."""
    base = _rows(0, 20_000)
    v1 = store.datasets.add(base, name="sales", key=["id"])
    one = _bytes(store, v1.uri)
    versions = [v1]
    for i in range(1, 4):
        versions.append(store.datasets.add(_rows(0, 20_000 + 200 * i), name="sales", key=["id"]))
    assert [v.lance_version for v in versions] == [1, 2, 3, 4]
    assert _bytes(store, v1.uri) < one * 1.2
    assert all(_exact(store, v) for v in versions)
    assert [v.num_rows for v in versions] == [20_000, 20_200, 20_400, 20_600]


def test_removed_and_changed_rows_read_back_exactly(store):
    """Deleting and changing rows makes a new version; every older version still reads as it was."""
    t = _rows(0, 5_000)
    v1 = store.datasets.add(t, name="sales", key=["id"])
    fewer = t.filter(pc.not_equal(pc.bit_wise_and(t["id"], 7), 0))
    v2 = store.datasets.add(fewer, name="sales")
    changed = fewer.set_column(1, "amount", pa.array(np.where(
        np.arange(fewer.num_rows) % 50 == 0, 1.0, 0.0) + fewer["amount"].to_numpy()))
    v3 = store.datasets.add(changed, name="sales")
    rewritten = _rows(0, 5_000, seed=9)
    v4 = store.datasets.add(rewritten, name="sales")
    assert len({v1.digest, v2.digest, v3.digest, v4.digest}) == 4
    assert [v.num_rows for v in (v1, v2, v3, v4)] == [5_000, 4_375, 4_375, 5_000]
    assert all(_exact(store, v) for v in (v1, v2, v3, v4))
    # v2 only deletes, v3 deletes and appends (two commits), v4 changes everything: overwrite.
    assert [v.lance_version for v in (v1, v2, v3, v4)] == [1, 2, 4, 5]
    assert v2.key == ("id",)  # kept from the previous version


def test_duplicate_rows_are_a_multiset(store):
    """Adding one more copy of an existing row is a new version with that extra copy."""
    t = pa.table({"a": [1, 1, 2], "b": ["x", "x", "y"]})
    v1 = store.datasets.add(t, name="dups")
    v2 = store.datasets.add(pa.concat_tables([t, t.slice(0, 1)]), name="dups")
    v3 = store.datasets.add(t.slice(1), name="dups")
    assert [v.num_rows for v in (v1, v2, v3)] == [3, 4, 2]
    assert all(_exact(store, v) for v in (v1, v2, v3))


def test_schema_change_needs_consent(store):
    """A changed column type is refused (naming it and the flag) and writes nothing; with consent it is a new version."""
    v1 = store.datasets.add(_rows(0, 50), name="sales")
    changed = _rows(0, 50).set_column(2, "qty", _rows(0, 50)["qty"].cast(pa.int64()))
    with pytest.raises(SchemaChangeError, match=r"qty int32 -> int64.*--allow-schema-change"):
        store.datasets.add(changed, name="sales")
    assert _lance(store, v1.uri).version == 1
    assert store.refs.get("dataset/sales") == v1.digest
    v2 = store.datasets.add(changed.drop_columns(["city"]), name="sales", allow_schema_change=True)
    assert dict(v2.schema) == {"id": "int64", "amount": "double", "qty": "int64"}
    assert _exact(store, v2) and _exact(store, v1)


def test_content_known_under_another_name_is_reused(store):
    """The same rows under a second name point its ref at the existing artifact; nothing is copied."""
    v1 = store.datasets.add(_rows(0, 30), name="a")
    v2 = store.datasets.add(_rows(0, 30), name="b")
    assert v2.digest == v1.digest and v2.name == "b" and v2.uri == v1.uri
    assert not store.exists(store.uri("datasets", "b.lance"))
    assert _exact(store, v2)


def test_going_back_to_an_old_content_reuses_its_version(store):
    """Re-adding version 1's rows moves the ref back; it is still version 1."""
    v1 = store.datasets.add(_rows(0, 30), name="a")
    store.datasets.add(_rows(0, 40), name="a")
    back = store.datasets.add(_rows(0, 30), name="a")
    assert back == v1
    assert store.datasets.get("a") == v1
    assert len(store.datasets.versions("a")) == 2


def test_an_unrecorded_lance_version_is_not_trusted(store):
    """If Lance holds a commit no version records (a crash mid-add), the next add still stores exactly its rows."""
    v1 = store.datasets.add(_rows(0, 100), name="a")
    lance.write_dataset(_rows(1000, 7), v1.uri, mode="append", storage_options=store.storage_options)  # rows no version has
    v2 = store.datasets.add(_rows(0, 101), name="a")
    assert v2.num_rows == 101 and _exact(store, v2) and _exact(store, v1)


def test_parents_and_metadata_are_recorded(store, tmp_path):
    """Parents go to the lineage graph; the file name and user metadata to the record."""
    raw = store.put_blob(b"raw bytes", name="raw")
    pacsv.write_csv(_rows(0, 10), tmp_path / "in.csv")
    v = store.datasets.add(tmp_path / "in.csv", name="a", parents=[raw.digest[:15]], metadata={"team": "risk"})
    record = store.artifacts.get(v.digest)
    meta = record.meta(DatasetMeta)
    assert record.parents == (raw.digest,)
    assert meta.source == "in.csv" and meta.extra == {"team": "risk"}
    with pytest.raises(NotFoundError):
        store.datasets.add(_rows(0, 11), name="a", parents=["sha256:" + "1" * 64])
    assert store.datasets.get("a") == v


def test_read_columns_and_filter(store):
    """read() projects columns and applies a SQL filter; unknown columns are input errors."""
    store.datasets.add(_rows(0, 100), name="a")
    part = store.datasets.read("a", columns=["id"], filter="id < 10")
    assert part.column_names == ["id"] and sorted(part["id"].to_pylist()) == list(range(10))
    with pytest.raises(InvalidInputError, match="no column"):
        store.datasets.read("a", columns=["nope"])


def _garbled(tmp_path: Path) -> Path:
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,2,3\n4\n")
    return tmp_path / "bad.csv"


def _not_utf8(tmp_path: Path) -> Path:
    (tmp_path / "latin.csv").write_bytes(b"a,b\n1,caf\xe9\n")
    return tmp_path / "latin.csv"


def _wrong_ext(tmp_path: Path) -> Path:
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    return tmp_path / "data.xlsx"


def _not_parquet(tmp_path: Path) -> Path:
    (tmp_path / "x.parquet").write_bytes(b"definitely not parquet")
    return tmp_path / "x.parquet"


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda p: p / "missing.csv", {}, "no file"),
        (_garbled, {}, "cannot read .* as CSV"),
        (_not_utf8, {}, "not valid UTF-8"),
        (_wrong_ext, {}, r"\*.csv, \*.parquet"),
        (_not_parquet, {}, "as Parquet"),
        (lambda p: _rows(0, 5), {"key": ["nope"]}, "'nope'.*not in the table"),
        (lambda p: _rows(0, 5), {"name": ""}, "not a valid dataset name"),
        (lambda p: _rows(0, 5), {"name": "a/b"}, "not a valid dataset name"),
        (lambda p: pa.table({"p": pa.array([{"x": 1}])}), {}, "struct"),
    ],
    ids=["missing", "garbled", "latin1", "extension", "not-parquet", "key", "empty-name", "slash-name", "struct"],
)
def test_bad_input_is_refused_and_writes_nothing(store, tmp_path, make, kwargs, message):
    """Each kind of bad input is an InvalidInputError with a useful message, and nothing is written."""
    args = {"name": "a", **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        store.datasets.add(make(tmp_path), **args)
    assert not store.exists(store.uri("datasets"))
    assert store.refs.list("dataset/") == []
    assert store.artifacts.find(kind=ArtifactKind.DATASET) == []


def test_pandas_frames_and_arrow_streams_are_tables_too(store):
    """A pandas DataFrame or an Arrow record batch reader stores the same content as the table."""
    t = _rows(0, 50)
    v = store.datasets.add(t, name="a")
    assert store.datasets.add(t.to_pandas(), name="a") == v
    assert store.datasets.add(pa.RecordBatchReader.from_batches(t.schema, t.to_batches(10)), name="a") == v


def test_unserialisable_metadata_writes_nothing(store):
    """Metadata that is not JSON is refused before any Lance write."""
    with pytest.raises(InvalidInputError, match="JSON"):
        store.datasets.add(_rows(0, 5), name="a", metadata={"when": object()})
    assert not store.exists(store.uri("datasets"))
