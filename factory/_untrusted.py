"""Parsing JSON and YAML that someone else wrote, within bounds that a hostile file cannot stretch.

Every loader caps the input's size and its nesting, refuses duplicate keys (the last value
would silently win) and, for YAML, caps alias expansion before anything is built: a
600-byte "billion laughs" card would otherwise grow to gigabytes once something walks or
prints it. Problems raise the caller's error type with a message naming the file, so a
package check can report them as contract violations and the CLI as one-line errors.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from typing import Any

from factory.errors import InvalidInputError

__all__ = ["MAX_DEPTH", "MAX_NODES", "load_json", "load_yaml", "no_duplicate_keys", "preview"]

MAX_DEPTH = 64
MAX_NODES = 100_000

ErrorType = Callable[[str], Exception]


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json`` ``object_pairs_hook`` that refuses an object naming one key twice."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {preview(key, 40)} appears twice")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 3, 8, 8, 8, 8
    r.maxstring, r.maxother, r.maxlong = 60, 60, 40
    return r


_REPR = _bounded_repr()


def preview(value: Any, limit: int = 80) -> str:
    """At most ``limit`` characters describing ``value``: a few levels and items, never the whole of it."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a structure too deep
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_depth(value: Any, max_depth: int, what: str, error: ErrorType) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise error(f"{what} is nested more than {max_depth} levels deep: flatten it")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def load_json(data: bytes | str, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH,
              error: ErrorType = InvalidInputError) -> Any:
    """``data`` parsed as strict JSON: at most ``max_bytes``, ``max_depth`` levels, no duplicate keys, no NaN."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed: shrink it")
    try:
        value = json.loads(data, object_pairs_hook=no_duplicate_keys, parse_constant=_refuse_constant)
    except RecursionError:
        raise error(f"{what} is nested more than {max_depth} levels deep: flatten it") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({preview(str(exc), 200)}): fix the file") from None
    _check_depth(value, max_depth, what, error)
    return value


def load_yaml(text: bytes | str, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH,
              max_nodes: int = MAX_NODES, error: ErrorType = InvalidInputError) -> Any:
    """``text`` parsed as one YAML document (safe types only), refused before it is built if too big.

    ``max_nodes`` bounds the document with every alias expanded, so an alias bomb is
    refused from its events, in time proportional to its size. An alias to a node that
    contains it (a cycle) is refused too.
    """
    import yaml

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}): re-save it as UTF-8") from None
    size = len(text.encode())
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed: shrink it")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_yaml_events(yaml.parse(text, Loader=loader), what, max_depth, max_nodes, error)
        return yaml.load(text, Loader=loader)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a number too long to convert
        raise error(f"{what} is not valid YAML ({' '.join(str(exc).split())[:200]}): fix the file") from None
    except RecursionError:
        raise error(f"{what} is nested more than {max_depth} levels deep: flatten it") from None


def _check_yaml_events(events: Any, what: str, max_depth: int, max_nodes: int, error: ErrorType) -> None:
    import yaml

    expanded: dict[str, int] = {}  # anchor -> node count of its node, aliases expanded
    open_nodes: list[list[Any]] = []  # [anchor, node count so far] of each open collection
    total = 0

    def count(n: int) -> None:
        nonlocal total
        if open_nodes:
            open_nodes[-1][1] += n
            size = open_nodes[-1][1]
        else:
            total += n
            size = total
        if size > max_nodes:
            raise error(f"{what} expands to more than {max_nodes:,} nodes (aliases included): simplify it")

    for event in events:
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_nodes.append([event.anchor, 1])
            if len(open_nodes) > max_depth:
                raise error(f"{what} is nested more than {max_depth} levels deep: flatten it")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = open_nodes.pop()
            if anchor is not None:
                expanded[anchor] = size
            count(size)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                expanded[event.anchor] = 1
            count(1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in expanded:
                raise error(f"{what} has an alias *{preview(event.anchor, 40)} to a node that contains it or is "
                            "not defined before it: write the value out")
            count(expanded[event.anchor])
