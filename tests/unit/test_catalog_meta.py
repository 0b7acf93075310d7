"""Catalog metadata (compare-and-swap keys) and append-only logs."""

from __future__ import annotations

import threading

import pytest

from factory.errors import InvalidInputError, MetaConflictError
from factory.store.catalog import open_catalog

pytestmark = pytest.mark.catalogs


@pytest.fixture
def catalog(catalog_location):
    """An empty catalog: a SQLite file, or a fresh PostgreSQL database."""
    return open_catalog(catalog_location)


def test_meta_is_set_once_then_moved_only_from_what_was_read(catalog):
    """A store id set by one process is never silently replaced by another."""
    catalog.set_meta("store-id", "s-1")
    with pytest.raises(MetaConflictError, match="holds 's-1'"):
        catalog.set_meta("store-id", "s-2")
    catalog.set_meta("store-id", "s-2", expected="s-1")
    assert catalog.meta("store-id") == "s-2"
    catalog.set_meta("store-id", None, expected="s-2")
    assert catalog.meta("store-id") is None


def test_log_append_numbers_entries_and_reads_ranges(catalog):
    """Entries keep their index forever; a batch lands whole with consecutive indexes."""
    assert catalog.log_append("tlog", [b"a", b"b"]) == 0
    assert catalog.log_append("tlog", [b"c"]) == 2
    assert catalog.log_append("other", [b"x"]) == 0
    assert catalog.log_size("tlog") == 3 and catalog.log_size("nothing") == 0
    assert catalog.log_read("tlog") == [b"a", b"b", b"c"]
    assert catalog.log_read("tlog", 1, 2) == [b"b"]
    assert catalog.log_read("tlog", 3) == []
    with pytest.raises(InvalidInputError, match="not a range"):
        catalog.log_read("tlog", 2, 1)


def test_concurrent_appends_lose_nothing_and_never_interleave_a_batch(catalog):
    """Many writers appending at once: every entry is there once and each batch is contiguous."""
    catalog.log_size("tlog")

    def writer(w: int) -> None:
        for i in range(15):
            catalog.log_append("tlog", [f"{w}:{i}:0".encode(), f"{w}:{i}:1".encode()])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = [e.decode() for e in catalog.log_read("tlog")]
    assert len(entries) == catalog.log_size("tlog") == 4 * 15 * 2
    assert len(set(entries)) == len(entries)
    for first, second in zip(entries[::2], entries[1::2], strict=True):
        assert first.endswith(":0") and second == first[:-1] + "1"
