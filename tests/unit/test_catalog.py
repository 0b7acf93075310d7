"""Catalog and refs: compare-and-swap moves, history, validated names."""

from __future__ import annotations

import pytest

from factory.errors import InvalidInputError, NotFoundError, RefConflictError

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def test_ref_moves_by_compare_and_swap_with_history(store):
    """A ref moves only from the value the caller expects; every move is kept."""
    store.refs.set("model/fraud/production", A, expected=None, actor="alice", reason="first")
    store.refs.set("model/fraud/production", B, expected=A, actor="bob", reason="better auc")
    with pytest.raises(RefConflictError) as info:
        store.refs.set("model/fraud/production", C, expected=A, actor="carol", reason="stale")
    assert info.value.actual == B and info.value.expected == A
    assert store.refs.get("model/fraud/production") == B
    history = store.refs.history("model/fraud/production")
    assert [(h.old, h.new, h.actor, h.reason) for h in history] == [
        (None, A, "alice", "first"),
        (A, B, "bob", "better auc"),
    ]


def test_ref_that_must_not_exist_conflicts_when_it_does(store):
    """expected=None means create-only: a second creator loses."""
    store.refs.set("dataset/x", A, expected=None)
    with pytest.raises(RefConflictError):
        store.refs.set("dataset/x", B, expected=None)


def test_delete_is_recorded_and_listing_follows(store):
    """Deleting a ref keeps its history and drops it from listings."""
    store.refs.set("a/one", A, expected=None)
    store.refs.set("a/two", B, expected=None)
    store.refs.set("b/three", C, expected=None)
    assert [r.name for r in store.refs.list("a/")] == ["a/one", "a/two"]
    store.refs.delete("a/one", expected=A, reason="retired")
    assert store.refs.get("a/one") is None
    assert store.refs.history("a/one")[-1].new is None
    with pytest.raises(NotFoundError, match="no ref named"):
        store.refs.require("a/one")


@pytest.mark.parametrize("name", ["", "/lead", "trail/", "sp ace", "a//b", "x" * 300])
def test_bad_ref_names_are_refused(store, name):
    """Names that would be ambiguous in paths or URLs are refused with the rule."""
    with pytest.raises(InvalidInputError, match="not a valid ref name"):
        store.refs.set(name, A, expected=None)


def test_ref_target_must_be_a_digest(store):
    """Refs point at digests, never paths."""
    with pytest.raises(InvalidInputError, match="not a digest"):
        store.refs.set("dataset/x", "/tmp/file.csv", expected=None)


def test_changes_are_read_on_from_a_sequence_number(store):
    """A watcher keeps the last seq it saw and gets only the moves after it, filtered by prefix."""
    store.refs.set("dataset/a", A, expected=None)
    seen = store.refs.changes()[-1].seq
    store.refs.set("model/m/dev", B, expected=None)
    store.refs.set("dataset/a", C, expected=A)
    assert [(c.name, c.new) for c in store.refs.changes(since=seen)] == [("model/m/dev", B), ("dataset/a", C)]
    assert [c.new for c in store.refs.changes(prefix="dataset/")] == [A, C]
    assert store.refs.changes(since=store.refs.changes()[-1].seq) == []


def test_ref_history_takes_its_time_from_the_store_clock(tmp_path):
    """With an injected clock, ref history is deterministic (state machines test against it)."""
    from datetime import UTC, datetime

    from factory.settings import Settings
    from factory.store import Store

    fixed = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    s = Store(tmp_path / "h", settings=Settings(home=str(tmp_path / "h")), clock=lambda: fixed)
    change = s.refs.set("dataset/x", A, expected=None)
    assert change.at == s.refs.history("dataset/x")[0].at == "2031-05-06T07:08:09.000000+00:00"
