"""Fuzzing name and ref parsing: a name is accepted whole and exactly as documented, or refused with a FactoryError."""

from __future__ import annotations

import re
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import FactoryError, InvalidInputError
from factory.settings import Settings
from factory.store import Store, check_dataset_name, check_digest, is_digest
from factory.store.embeddings._rows import check_name, check_tag
from factory.store.refs import check_ref_name

FUZZ = settings(max_examples=200, deadline=2000, database=None)

# Mostly name-like text, with the characters that make look-alikes: newlines, slashes, dots, spaces.
names = st.text(alphabet=st.sampled_from(list("aZ09._-/@:\n\r\t \x00é[]") ), max_size=140) | st.text(max_size=40)

digests = st.text(alphabet="0123456789abcdef", min_size=63, max_size=65).map(lambda h: "sha256:" + h)

DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TAG = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,99}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def accepted(check, name) -> bool:
    try:
        assert check(name) == name
        return True
    except InvalidInputError:
        return False


@FUZZ
@given(name=names)
def test_dataset_names(name):
    """A dataset name passes exactly when the whole of it matches the documented pattern."""
    assert accepted(check_dataset_name, name) == bool(DATASET.fullmatch(name))


@FUZZ
@given(name=names)
def test_collection_names_and_tags(name):
    """Collection names and tags pass exactly when they match their patterns whole."""
    assert accepted(check_name, name) == bool(COLLECTION.fullmatch(name))
    assert accepted(check_tag, name) == (bool(TAG.fullmatch(name)) and not is_digest(name))


@FUZZ
@given(text=names | digests | digests.map(lambda d: d + "\n") | digests.map(lambda d: d.upper()))
def test_digests(text):
    """A digest is 'sha256:' and 64 lowercase hex characters, and nothing after them."""
    assert is_digest(text) == bool(DIGEST.fullmatch(text))
    assert accepted(check_digest, text) == is_digest(text)


@FUZZ
@given(name=names)
def test_ref_names_pass_or_raise_a_factory_error(name):
    """Ref names are accepted or refused with a FactoryError: no other exception."""
    try:
        assert check_ref_name(name) == name
    except FactoryError:
        pass


@settings(max_examples=50, deadline=5000, database=None)
@given(name=names)
def test_dataset_lookups_by_odd_names_fail_cleanly(name):
    """`dataset show NAME` with any text: a version or a FactoryError, never a traceback."""
    with tempfile.TemporaryDirectory() as home:
        store = Store(home, settings=Settings(home=home))
        try:
            store.datasets.get(name)
        except FactoryError:
            pass
