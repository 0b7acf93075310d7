"""Refs: mutable names (``dataset/iris``, ``model/fraud/production``) pointing at digests.

A ref moves only by compare-and-swap: the caller says what it expects the ref to point
at now, and the move fails with ``RefConflictError`` if someone else moved it first,
so concurrent writers never lose an update. Every move is kept as history.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable
from datetime import UTC, datetime

from factory.errors import InvalidInputError, NotFoundError
from factory.store._digest import check_digest
from factory.store.catalog import Catalog, Ref, RefChange, to_iso

__all__ = ["Refs", "Ref", "RefChange"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_UNSET = object()


def check_ref_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 256:
        raise InvalidInputError(
            f"{name!r} is not a valid ref name: use letters, digits, '.', '_' and '-' in '/'-separated parts"
        )
    return name


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Refs:
    """Validated access to the catalog's refs."""

    def __init__(self, catalog: Catalog, *, clock: Callable[[], datetime] | None = None):
        self.catalog = catalog
        self._clock = clock or (lambda: datetime.now(UTC))

    def _now(self) -> str:
        return to_iso(self._clock())

    def get(self, name: str) -> str | None:
        ref = self.catalog.ref(check_ref_name(name))
        return ref.target if ref else None

    def require(self, name: str) -> str:
        target = self.get(name)
        if target is None:
            raise NotFoundError(f"no ref named {name!r}: check the name (list them with 'factory refs')")
        return target

    def set(self, name: str, target: str, *, expected: str | None | object = _UNSET,
            actor: str | None = None, reason: str = "") -> RefChange:
        """Point ``name`` at ``target``.

        ``expected`` is the compare in compare-and-swap: the digest the caller read (or
        ``None`` for "must not exist yet"). Left out, the current value is read first,
        which is a plain overwrite that still records history.
        """
        check_ref_name(name)
        check_digest(target)
        if expected is _UNSET:
            expected = self.get(name)
        return self.catalog.set_ref(name, target, expected=expected, actor=actor or _actor(), reason=reason,
                                    at=self._now())

    def delete(self, name: str, *, expected: str, actor: str | None = None, reason: str = "") -> RefChange:
        return self.catalog.set_ref(check_ref_name(name), None, expected=expected, actor=actor or _actor(),
                                    reason=reason, at=self._now())

    def list(self, prefix: str = "") -> list[Ref]:
        return self.catalog.refs(prefix)

    def history(self, name: str) -> list[RefChange]:
        return self.catalog.history(check_ref_name(name))

    def changes(self, since: int = 0, prefix: str = "") -> list[RefChange]:
        """Every move after ``since`` (a ``RefChange.seq``) of refs starting with ``prefix``,
        in order: a watcher keeps the last ``seq`` it saw and reads on from there."""
        return self.catalog.ref_changes(since, prefix)
