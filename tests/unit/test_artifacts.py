"""Artifact records: identity, idempotence, typed metadata, records stored as blobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from factory.errors import InvalidInputError, NotFoundError
from factory.settings import Settings
from factory.store import Artifact, ArtifactKind, Store

pytestmark = pytest.mark.catalogs


class TrainingMeta(BaseModel):
    lr: float
    epochs: int


def test_metadata_artifact_digest_is_its_content(store, tmp_path):
    """The same metadata and parents give the same digest in any store, at any time."""
    parent = store.put_blob(b"rows").digest
    a = store.artifacts.add("training-config", metadata=TrainingMeta(lr=0.1, epochs=3), parents=[parent], name="cfg")
    other = Store(tmp_path / "other", settings=Settings(home=str(tmp_path / "other")))
    other.put_blob(b"rows")
    b = other.artifacts.add("training-config", metadata={"epochs": 3, "lr": 0.1}, parents=[parent], name="cfg")
    assert a.digest == b.digest
    c = store.artifacts.add("training-config", metadata={"lr": 0.2, "epochs": 3}, parents=[parent], name="cfg")
    assert c.digest != a.digest


def test_adding_a_known_digest_returns_the_first_record(store):
    """Artifacts are immutable: re-adding returns the original record unchanged."""
    digest = store.blobs.put(b"content")
    first = store.artifacts.add(ArtifactKind.BLOB, digest=digest, name="first")
    again = store.artifacts.add(ArtifactKind.BLOB, digest=digest, name="second")
    assert again == first and again.name == "first"


def test_record_is_canonical_json_blob_with_typed_metadata(store):
    """The record is a verified blob; metadata reads back typed."""
    art = store.artifacts.add("training-config", metadata=TrainingMeta(lr=0.5, epochs=2))
    entry = store.catalog.artifact(art.digest)
    raw = store.blobs.get(entry.record_digest)
    assert json.loads(raw)["type"] == "factory.artifact/v1"
    assert Artifact.model_validate_json(raw) == art
    assert store.artifacts.get(art.digest).meta(TrainingMeta) == TrainingMeta(lr=0.5, epochs=2)
    assert art.producer.startswith("factory/")


def test_parents_must_exist(store):
    """Lineage never points at nothing: an unknown parent is refused."""
    with pytest.raises(NotFoundError, match="record the parent first"):
        store.artifacts.add("training-config", metadata={}, parents=["sha256:" + "1" * 64])


def test_clock_is_injected(store_settings):
    """Creation time comes from the injected clock, so tests are deterministic."""
    fixed = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    s = Store(settings=store_settings, clock=lambda: fixed)
    assert s.put_blob(b"x").created_at == fixed


def test_resolve_unique_prefix(store):
    """A short digest prefix names an artifact when unique, with clear errors otherwise."""
    art = store.put_blob(b"prefix me")
    assert store.artifacts.resolve(art.digest[:15]) == art.digest
    assert store.artifacts.resolve(art.digest[7:20]) == art.digest
    with pytest.raises(InvalidInputError, match="too short"):
        store.artifacts.resolve("ab")
    with pytest.raises(NotFoundError):
        store.artifacts.resolve("sha256:ffffffffffffff")


def test_find_by_kind_and_name(store):
    """Listing by kind and name returns records oldest first."""
    store.put_blob(b"1", name="a")
    store.put_blob(b"2", name="b")
    store.artifacts.add("training-config", metadata={"x": 1})
    assert [a.name for a in store.artifacts.find("blob")] == ["a", "b"]
    assert [a.name for a in store.artifacts.find("blob", name="b")] == ["b"]


def test_a_known_digest_made_again_by_another_producer_keeps_both(store):
    """The same bytes produced twice stay one artifact, and lineage shows both producers' parents."""
    first_src = store.put_blob(b"source one", name="one.csv").digest
    second_src = store.put_blob(b"source two", name="two.csv").digest
    digest = store.blobs.put(b"the same output")
    first = store.artifacts.add("checkpoint", digest=digest, parents=[first_src], name="ckpt")
    again = store.artifacts.add("checkpoint", digest=digest, parents=[second_src], metadata={"by": "second"})
    assert again.digest == first.digest and again.parents == (second_src,)
    assert store.artifacts.get(digest) == first
    assert store.lineage.parents(digest) == sorted([first_src, second_src])
    assert [p.parents for p in store.artifacts.productions(digest)] == [(first_src,), (second_src,)]
    assert len(store.artifacts.find("checkpoint")) == 1
    # Nothing new: the same parents again record no third production.
    assert store.artifacts.add("checkpoint", digest=digest, parents=[second_src]) == first
    assert len(store.artifacts.productions(digest)) == 2


def _counting_reads(store, monkeypatch) -> list[str]:
    reads: list[str] = []
    original = store.blobs.get

    def get(digest, *args, **kwargs):
        reads.append(digest)
        return original(digest, *args, **kwargs)

    monkeypatch.setattr(store.blobs, "get", get)
    return reads


def test_find_by_metadata_field_reads_only_the_matches(store, monkeypatch):
    """Finding attestations by subject reads the matching records, not every record in the store."""
    for i in range(50):
        store.artifacts.add("attestation", metadata={"subject": f"sha256:{i:064x}", "policy": "quality"})
    reads = _counting_reads(store, monkeypatch)
    found = store.artifacts.find("attestation", where={"subject": f"sha256:{7:064x}"})
    assert [a.metadata["subject"] for a in found] == [f"sha256:{7:064x}"]
    assert len(reads) == 1
    assert len(store.artifacts.find(where={"policy": "quality"}, limit=5)) == 5


def test_where_matches_values_exactly_by_type(store):
    """"1", 1 and true are different values; 3.0 is 3; None matches null; all conditions must hold."""
    long_text = "x" * 500
    a = store.artifacts.add("evaluation", metadata={"v": "1", "n": 3.0, "ok": True, "gone": None, "t": long_text})
    b = store.artifacts.add("evaluation", metadata={"v": 1, "n": 4, "ok": False, "nested": {"v": 1}})
    digests = lambda **where: [x.digest for x in store.artifacts.find(where=where)]  # noqa: E731
    assert digests(v="1") == [a.digest] and digests(v=1) == [b.digest]
    assert digests(n=3) == [a.digest] and digests(ok=True) == [a.digest] and digests(gone=None) == [a.digest]
    assert digests(t=long_text) == [a.digest] and digests(t=long_text + "y") == []
    assert digests(v=1, ok=False) == [b.digest] and digests(v=1, ok=True) == []
    assert store.artifacts.find("model", where={"v": 1}) == []
    with pytest.raises(InvalidInputError, match="only top-level scalar fields are indexed"):
        store.artifacts.find(where={"nested": {"v": 1}})
    with pytest.raises(InvalidInputError, match="not a count"):
        store.artifacts.find(limit=0)


def test_a_catalog_from_before_the_field_index_is_backfilled_on_first_find(tmp_path):
    """After an upgrade, artifacts recorded by older code are found by their fields too."""
    import sqlite3

    home = str(tmp_path / "home")
    old = Store(home, settings=Settings(home=home))
    art = old.artifacts.add("training-config", metadata={"lr": 0.1, "arch": "mlp"})
    db = sqlite3.connect(old.catalog.path)
    # Back to schema 4: undo migrations 5 and 6.
    db.executescript("DROP TABLE artifact_fields; DROP TABLE ref_rules; ALTER TABLE ref_history DROP COLUMN refused;"
                     "DELETE FROM schema_version WHERE version >= 5;")
    db.commit()
    db.close()
    new = Store(home, settings=Settings(home=home))
    assert [a.digest for a in new.artifacts.find(where={"arch": "mlp"})] == [art.digest]
    assert new.catalog.meta("backfill:artifact-fields") is None
