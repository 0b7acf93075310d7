"""Open artifact kinds: registered names, refused typos, records of unknown kinds still readable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from factory.errors import InvalidInputError
from factory.store import ArtifactKind, check_kind, known_kinds, register_kind


def test_the_store_registers_its_own_kinds():
    """Every kind the store itself records is known without registering anything."""
    for kind in ("blob", "tree", "dataset", "feature-view", "embedding-collection", "external", "run",
                 "checkpoint", "training-config", "code", "environment", "model", "evaluation",
                 "attestation", "ticket", "deployment"):
        assert kind in known_kinds() and ArtifactKind(kind) == kind


def test_a_layer_registers_a_kind_once_and_records_it(store):
    """A kind registered where a layer defines it can be recorded; registering again is harmless."""
    assert register_kind("policy-result", "the outcome of one policy") == "policy-result"
    register_kind("policy-result")
    assert known_kinds()["policy-result"] == "the outcome of one policy"
    art = store.artifacts.add("policy-result", metadata={"passed": True})
    assert store.artifacts.get(art.digest).kind == "policy-result"


def test_an_unregistered_kind_is_refused_with_how_to_register_it(store):
    """A typo in a kind is an error naming the kind and register_kind, and nothing is recorded."""
    with pytest.raises(InvalidInputError, match=r"'modle' is not registered.*register_kind\('modle'"):
        store.artifacts.add("modle", metadata={"x": 1})
    assert store.artifacts.find("modle") == []
    with pytest.raises(InvalidInputError, match="not a valid artifact kind"):
        register_kind("Bad Kind")
    with pytest.raises(InvalidInputError, match="not a valid artifact kind"):
        check_kind("model\n")


def test_records_of_kinds_this_process_never_registered_still_load(store):
    """Reading needs no registration: the CLI shows artifacts of layers it never imported."""
    register_kind("exotic-kind")
    digest = store.artifacts.add("exotic-kind", metadata={"a": 1}).digest
    code = (
        "import sys; from factory.store import Store; from factory.settings import Settings;"
        f"s = Store({store.home!r}, settings=Settings(home={store.home!r}));"
        f"print(s.artifacts.get({digest!r}).kind)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "exotic-kind"
