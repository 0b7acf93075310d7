"""Ref names and ref patterns: what a name may be, and how a pattern matches names.

A name is ``/``-separated parts of letters, digits, ``.``, ``_`` and ``-`` (each part
starting with a letter or digit). A pattern is a name in which a whole part may be
``*``, matching exactly one part: ``model/*/prod`` matches ``model/fraud/prod`` but not
``model/fraud/prod/x``. Names are checked with ``fullmatch``, so a trailing newline
never slips through as a look-alike.
"""

from __future__ import annotations

import re

from factory.errors import InvalidInputError

__all__ = ["check_ref_name", "check_pattern", "pattern_matches", "specificity"]

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX = 256


def check_ref_name(name: str) -> str:
    """``name`` if it is a valid ref name, else an error giving the rule."""
    if not isinstance(name, str) or len(name) > _MAX or not all(_PART.fullmatch(p) for p in name.split("/")):
        raise InvalidInputError(
            f"{name!r} is not a valid ref name: use letters, digits, '.', '_' and '-' in '/'-separated parts"
        )
    return name


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is a valid ref pattern (a name whose parts may be ``*``)."""
    if (not isinstance(pattern, str) or len(pattern) > _MAX
            or not all(p == "*" or _PART.fullmatch(p) for p in pattern.split("/"))):
        raise InvalidInputError(
            f"{pattern!r} is not a valid ref pattern: give '/'-separated parts, each a name part or '*' "
            "(one whole part), e.g. 'model/*/prod'"
        )
    return pattern


def pattern_matches(pattern: str, name: str) -> bool:
    parts, names = pattern.split("/"), name.split("/")
    return len(parts) == len(names) and all(p in ("*", n) for p, n in zip(parts, names, strict=True))


def specificity(pattern: str) -> int:
    """How many parts are literal: the more, the more specific the pattern."""
    return sum(p != "*" for p in pattern.split("/"))
