"""Refs: compare-and-swap moves, history, validated names, targets of the right kind, protected refs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from factory.errors import InvalidInputError, NotFoundError, RefConflictError, RefProtectedError
from factory.settings import Settings
from factory.store import Store, register_ref_namespace

pytestmark = pytest.mark.catalogs


def _as(store, actor: str) -> Store:
    """The same store, used by another actor."""
    return Store(store.home, settings=replace(store.settings, actor=actor))


def _models(store, n: int = 3) -> list[str]:
    return [store.artifacts.add("model", metadata={"i": i}).digest for i in range(n)]


def _datasets(store, n: int = 3) -> list[str]:
    return [store.artifacts.add("dataset", metadata={"i": i}, name="x").digest for i in range(n)]


def test_ref_moves_by_compare_and_swap_with_history(store):
    """A ref moves only from the value the caller expects; every move is kept with who made it."""
    a, b, c = _models(store)
    _as(store, "alice").refs.set("model/fraud/production", a, expected=None, reason="first")
    _as(store, "bob").refs.set("model/fraud/production", b, expected=a, reason="better auc")
    with pytest.raises(RefConflictError) as info:
        _as(store, "carol").refs.set("model/fraud/production", c, expected=a, reason="stale")
    assert info.value.actual == b and info.value.expected == a
    assert store.refs.get("model/fraud/production") == b
    history = store.refs.history("model/fraud/production")
    assert [(h.old, h.new, h.actor, h.reason) for h in history] == [
        (None, a, "alice", "first"),
        (a, b, "bob", "better auc"),
    ]


def test_ref_that_must_not_exist_conflicts_when_it_does(store):
    """expected=None means create-only: a second creator loses."""
    a, b, _ = _datasets(store)
    store.refs.set("dataset/x", a, expected=None)
    with pytest.raises(RefConflictError):
        store.refs.set("dataset/x", b, expected=None)


def test_delete_is_recorded_and_listing_follows(store):
    """Deleting a ref keeps its history and drops it from listings."""
    a, b, c = (store.blobs.put(x) for x in (b"a", b"b", b"c"))
    store.refs.set("a/one", a, expected=None)
    store.refs.set("a/two", b, expected=None)
    store.refs.set("b/three", c, expected=None)
    assert [r.name for r in store.refs.list("a/")] == ["a/one", "a/two"]
    store.refs.delete("a/one", expected=a, reason="retired")
    assert store.refs.get("a/one") is None
    assert store.refs.history("a/one")[-1].new is None
    with pytest.raises(NotFoundError, match="no ref named"):
        store.refs.require("a/one")


@pytest.mark.parametrize("name", ["", "/lead", "trail/", "sp ace", "a//b", "x" * 300, "model/m/prod\n", "dataset/\nx"])
def test_bad_ref_names_are_refused(store, name):
    """Names that would be ambiguous in paths or URLs, or look alike with a newline, are refused with the rule."""
    with pytest.raises(InvalidInputError, match="not a valid ref name"):
        store.refs.set(name, "sha256:" + "a" * 64, expected=None)


def test_ref_target_must_be_a_digest(store):
    """Refs point at digests, never paths."""
    with pytest.raises(InvalidInputError, match="not a digest"):
        store.refs.set("dataset/x", "/tmp/file.csv", expected=None)


def test_ref_target_must_exist_and_be_of_its_namespace_kind(store):
    """A dataset ref cannot point at a blob or at nothing; free namespaces need only a stored digest."""
    blob = store.put_blob(b"not a dataset").digest
    with pytest.raises(InvalidInputError, match=r"is a blob artifact.*dataset/\* point at dataset"):
        store.refs.set("dataset/base", blob)
    with pytest.raises(NotFoundError, match="no artifact with that digest"):
        store.refs.set("model/m/candidates/abc", "sha256:" + "e" * 64)
    with pytest.raises(NotFoundError, match="holds nothing with that digest"):
        store.refs.set("scratch/x", "sha256:" + "e" * 64)
    assert store.refs.list() == []
    store.refs.set("scratch/x", blob)
    (model,) = _models(store, 1)
    store.refs.set("model/m/candidates/abc", model)


def test_a_layer_registers_its_namespace(store):
    """A namespace registered by a layer holds only its kind."""
    register_ref_namespace("policy-result/*", "evaluation")
    (model,) = _models(store, 1)
    with pytest.raises(InvalidInputError, match="point at evaluation artifacts"):
        store.refs.set("policy-result/q", model)
    store.refs.set("policy-result/q", store.artifacts.add("evaluation", metadata={"auc": 0.9}).digest)


def test_a_protected_ref_moves_only_for_its_actors_and_refusals_are_recorded(store):
    """An unlisted actor cannot move model/*/prod; the refusal is kept with who, when and why."""
    a, b, _ = _models(store)
    controller, bob = _as(store, "factory-controller"), _as(store, "bob@laptop")
    controller.refs.set("model/fraud/prod", a, expected=None, reason="promoted after canary")
    with pytest.raises(RefProtectedError, match=r"bob@laptop may not move model/fraud/prod.*factory-controller"):
        bob.refs.set("model/fraud/prod", b, expected=a, reason="hotfix")
    with pytest.raises(RefProtectedError):
        bob.refs.delete("model/fraud/prod", expected=a)
    assert store.refs.get("model/fraud/prod") == a
    assert [c.actor for c in store.refs.history("model/fraud/prod")] == ["factory-controller"]
    refused = [c for c in store.refs.history("model/fraud/prod", refused=True) if c.refused]
    assert [(c.actor, c.old, c.new) for c in refused] == [("bob@laptop", a, b), ("bob@laptop", a, None)]
    assert "refused: refs matching model/*/prod move only for factory-controller (asked: hotfix)" == refused[0].reason
    assert all(c.at for c in refused)
    assert [c.actor for c in store.refs.changes()] == ["factory-controller"]
    bob.refs.set("model/fraud/dev", b)  # other environments are not protected by default


def test_protection_rules_only_narrow_and_change_only_by_their_actors(store):
    """A new rule adds a check; changing or removing one needs an actor it lists."""
    a, b, c = _models(store)
    alice, bob = _as(store, "alice"), _as(store, "bob")
    alice.refs.protect("model/fraud/*", ["alice"])
    with pytest.raises(RefProtectedError, match="only alice may"):
        bob.refs.protect("model/fraud/*", ["bob"])
    with pytest.raises(RefProtectedError):
        bob.refs.set("model/fraud/dev", a)
    alice.refs.set("model/fraud/dev", a)
    # model/fraud/prod matches both its default rule and alice's: every matching rule must list the actor.
    with pytest.raises(RefProtectedError, match="model/\\*/prod"):
        alice.refs.set("model/fraud/prod", b)
    alice.refs.protect("model/fraud/*", ["alice", "bob"])
    bob.refs.set("model/fraud/dev", c, expected=a)
    assert {r.pattern: r.actors for r in store.refs.rules()}["model/fraud/*"] == ("alice", "bob")
    bob.refs.unprotect("model/fraud/*")
    with pytest.raises(InvalidInputError, match="not a valid ref pattern"):
        alice.refs.protect("model/**", ["alice"])
    with pytest.raises(InvalidInputError, match="at least one actor"):
        alice.refs.protect("model/x/*", [])


def test_changes_are_read_on_from_a_sequence_number(store):
    """A watcher keeps the last seq it saw and gets only the moves after it, filtered by prefix."""
    a, c, _ = _datasets(store)
    (b,) = _models(store, 1)
    store.refs.set("dataset/a", a, expected=None)
    seen = store.refs.changes()[-1].seq
    store.refs.set("model/m/dev", b, expected=None)
    store.refs.set("dataset/a", c, expected=a)
    assert [(ch.name, ch.new) for ch in store.refs.changes(since=seen)] == [("model/m/dev", b), ("dataset/a", c)]
    assert [ch.new for ch in store.refs.changes(prefix="dataset/")] == [a, c]
    assert store.refs.changes(since=store.refs.changes()[-1].seq) == []


def test_ref_history_takes_its_time_and_actor_from_the_store(store_settings):
    """With an injected clock, ref history is deterministic; the actor is the store's identity."""
    fixed = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    s = Store(settings=replace(store_settings, actor="ci@runner"), clock=lambda: fixed)
    (a,) = _datasets(s, 1)
    change = s.refs.set("dataset/x", a, expected=None)
    assert change.at == s.refs.history("dataset/x")[0].at == "2031-05-06T07:08:09.000000+00:00"
    assert change.actor == "ci@runner"


def test_the_actor_comes_from_factory_actor_else_user_at_host():
    """Who moved a ref is a real identity: FACTORY_ACTOR, else the OS user and host."""
    import socket

    assert Settings.from_env({"FACTORY_ACTOR": "release-manager"}).actor == "release-manager"
    assert Settings.from_env({}).actor.endswith("@" + socket.gethostname())
