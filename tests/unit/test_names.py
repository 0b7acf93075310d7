"""Names are checked whole: a trailing newline or other look-alike never passes as a valid name."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from factory.errors import InvalidInputError, NotFoundError

LOOK_ALIKES = ["base\n", "base\r\n", "base\n\n", " base", "base ", "base\t", "ba\nse"]


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_dataset_names_with_a_trailing_newline_are_refused(store, name):
    """`dataset add --name $'base\\n'` is refused with a clear error, never stored as a look-alike."""
    from factory.store import check_dataset_name

    with pytest.raises(InvalidInputError, match="not a valid dataset name"):
        check_dataset_name(name)
    with pytest.raises(InvalidInputError, match="not a valid dataset name"):
        store.datasets.add(pa.table({"a": [1]}), name=name)
    assert store.refs.list() == []


def test_a_dataset_looked_up_with_a_trailing_newline_is_not_found(store):
    """`dataset show $'base\\n'` does not resolve to `base`."""
    store.datasets.add(pa.table({"a": [1]}), name="base")
    with pytest.raises((InvalidInputError, NotFoundError)):
        store.datasets.get("base\n")


@pytest.mark.parametrize("text", ["sha256:" + "0" * 64 + "\n", "sha256:" + "0" * 64 + "\r\n"])
def test_digests_with_a_trailing_newline_are_not_digests(text):
    """A digest with a newline after it is malformed: it never becomes a blob path."""
    from factory.store import check_digest, is_digest

    assert not is_digest(text)
    with pytest.raises(InvalidInputError, match="not a digest"):
        check_digest(text)


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_embedding_collection_names_and_tags_are_checked_whole(name):
    """Collection names and tags with a trailing newline are refused."""
    from factory.store.embeddings._rows import check_name, check_tag

    with pytest.raises(InvalidInputError):
        check_name(name)
    with pytest.raises(InvalidInputError):
        check_tag(name)


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_feature_log_and_view_names_are_checked_whole(store, name):
    """A feature log or view named with a trailing newline is refused or not found, never a look-alike."""
    from factory.store.features import FeatureLog

    with pytest.raises(InvalidInputError):
        FeatureLog(store, name)
    with pytest.raises((InvalidInputError, NotFoundError)):
        store.features.get(name)


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_contract_and_architecture_names_are_checked_whole(name):
    """A model or architecture name with a trailing newline is refused."""
    from pydantic import ValidationError

    from factory.contract import Architecture, Contract, default_registry

    sig = default_registry().get("mlp-classifier").expected({"in_features": 4, "out_features": 3})
    with pytest.raises(ValidationError):
        Contract(name=name, inputs=sig.inputs, outputs=sig.outputs)
    with pytest.raises(InvalidInputError):
        Architecture(name.lower(), "1", "factory.contract._mlp:build_classifier")


@pytest.mark.parametrize("column", [".", "a.b", "`", "a`b", "\x00", "_rowaddr", "_rowid"])
def test_column_names_lance_cannot_hold_are_refused_before_writing(store, column):
    """A column named 'a.b' or '_rowaddr' is refused with its name, and nothing is written (found by fuzzing)."""
    with pytest.raises(InvalidInputError, match="rename the column"):
        store.datasets.add(pa.table({column: [1], "z": [2]}), name="d")
    assert not os.path.exists(store.uri("datasets"))
