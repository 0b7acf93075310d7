"""Digest strings: ``sha256:<64 lowercase hex>``, the only way anything is referenced."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from factory.errors import InvalidInputError

PREFIX = "sha256:"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_digest(value: str) -> bool:
    return isinstance(value, str) and bool(_DIGEST.fullmatch(value))


def check_digest(value: str) -> str:
    """Return ``value`` if it is a well-formed digest, else raise naming the expected form."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInputError(
            f"{value!r} is not a digest: expected 'sha256:' followed by 64 lowercase hex characters"
        )
    return value


def hex_of(digest: str) -> str:
    return check_digest(digest)[len(PREFIX) :]


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding used for hashing: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
