"""How top-level metadata fields are indexed for ``artifacts.find(where=...)``.

Each scalar field (str, int, float, bool, None) becomes one text value in the catalog's
field index: canonical JSON, so ``"1"`` and ``1`` and ``true`` stay distinct, with an
integral float written as the int it equals (``3.0`` matches ``3``). Values longer than
``_LONG`` characters are indexed by their SHA-256, which keeps index entries small on
every database and still matches exactly. Lists and objects are not indexed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from factory.errors import InvalidInputError

__all__ = ["indexed_fields", "field_value", "where_values", "BACKFILL_KEY"]

BACKFILL_KEY = "backfill:artifact-fields"
_LONG = 200
_SCALARS = (str, int, float, bool, type(None))


def field_value(value: Any) -> str:
    """The index text of one scalar value."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    if len(text) > _LONG:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def indexed_fields(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The index entries of a record's metadata: its top-level scalar fields."""
    return {k: field_value(v) for k, v in metadata.items() if isinstance(v, _SCALARS)}


def where_values(where: Mapping[str, Any]) -> dict[str, str]:
    """``find(where=...)`` as index entries, refusing what the index cannot hold."""
    out = {}
    for field, value in where.items():
        if not isinstance(field, str) or not field:
            raise InvalidInputError(f"where: {field!r} is not a metadata field name: give top-level field names")
        if not isinstance(value, _SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidInputError(
                f"where: {field}={value!r} cannot be matched: give a str, int, finite float, bool or None "
                "(only top-level scalar fields are indexed)"
            )
        out[field] = field_value(value)
    return out
