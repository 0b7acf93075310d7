"""Refs: mutable names (``dataset/iris``, ``model/fraud/prod``) pointing at digests.

A ref moves only by compare-and-swap: the caller says what it expects the ref to point
at now, and the move fails with ``RefConflictError`` if someone else moved it first,
so concurrent writers never lose an update. Every move is kept as history, with the
actor who made it (``Settings.actor``: ``FACTORY_ACTOR``, else ``user@host``).

Namespaces: a ref's target must exist, and under a registered namespace it must be an
artifact of the namespace's kind (``refs set dataset/x BLOB`` is refused). The store
registers its own (``factory.store``'s docstring lists them); a layer adds its own with
``register_ref_namespace``.

Protection: rules in the catalog name the actors that may move refs matching a pattern
(by default ``model/*/prod`` and ``model/*/staging`` move only for
``factory-controller``). A move by anyone else raises ``RefProtectedError`` and is
recorded in the ref's history as refused. Every rule matching a ref must list the
actor, so adding a rule can only narrow who may move it; changing or removing a rule
needs an actor it lists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from factory.errors import InvalidInputError, NotFoundError
from factory.settings import os_actor
from factory.store._digest import check_digest
from factory.store._refnames import check_pattern, check_ref_name, pattern_matches, specificity
from factory.store.catalog import Catalog, Ref, RefChange, RefRule, to_iso
from factory.store.kinds import ArtifactKind, check_kind_name

if TYPE_CHECKING:
    from factory.store.blobs import BlobStore

__all__ = ["Refs", "Ref", "RefChange", "RefRule", "register_ref_namespace", "ref_namespaces", "check_ref_name"]

_UNSET = object()
_NAMESPACES: dict[str, frozenset[str]] = {}
_LOCK = threading.Lock()


def register_ref_namespace(pattern: str, kinds: str | Iterable[str]) -> str:
    """Refs matching ``pattern`` must point at artifacts of one of ``kinds`` (added to any
    kinds the pattern allows already). The most specific matching pattern decides."""
    check_pattern(pattern)
    names = frozenset([kinds] if isinstance(kinds, str) else kinds)
    if not names:
        raise InvalidInputError(f"ref namespace {pattern!r} needs at least one artifact kind")
    for kind in names:
        check_kind_name(kind)
    with _LOCK:
        _NAMESPACES[pattern] = _NAMESPACES.get(pattern, frozenset()) | names
    return pattern


def ref_namespaces() -> dict[str, tuple[str, ...]]:
    """Every registered namespace pattern and the kinds its refs point at."""
    with _LOCK:
        return {p: tuple(sorted(k)) for p, k in sorted(_NAMESPACES.items())}


def _namespace(name: str) -> tuple[str, frozenset[str]] | None:
    with _LOCK:
        matching = [(specificity(p), p) for p in _NAMESPACES if pattern_matches(p, name)]
        if not matching:
            return None
        pattern = max(matching)[1]
        return pattern, _NAMESPACES[pattern]


for _pattern, _kind in (
    ("dataset/*", ArtifactKind.DATASET),
    ("feature-view/*", ArtifactKind.FEATURE_VIEW),
    ("feature-online/*", ArtifactKind.BLOB),
    ("embeddings/*", ArtifactKind.EMBEDDING_COLLECTION),
    ("embeddings/*/*", ArtifactKind.EMBEDDING_COLLECTION),
    ("model/*/candidates/*", ArtifactKind.MODEL),
    ("model/*/*", ArtifactKind.MODEL),
    ("run/*", ArtifactKind.RUN),
    ("ticket/*", ArtifactKind.TICKET),
    ("policy/env/*", "environment-policy"),
):
    register_ref_namespace(_pattern, str(_kind))


class Refs:
    """Validated, guarded access to the catalog's refs, acting as ``actor``."""

    def __init__(self, catalog: Catalog, *, blobs: BlobStore | None = None, actor: str | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.catalog = catalog
        self.blobs = blobs
        self.actor = actor or os_actor()
        self._clock = clock or (lambda: datetime.now(UTC))

    def _now(self) -> str:
        return to_iso(self._clock())

    def get(self, name: str) -> str | None:
        ref = self.catalog.ref(check_ref_name(name))
        return ref.target if ref else None

    def require(self, name: str) -> str:
        target = self.get(name)
        if target is None:
            raise NotFoundError(f"no ref named {name!r}: check the name (list them with 'factory refs list')")
        return target

    def set(self, name: str, target: str, *, expected: str | None | object = _UNSET, reason: str = "") -> RefChange:
        """Point ``name`` at ``target``.

        ``expected`` is the compare in compare-and-swap: the digest the caller read (or
        ``None`` for "must not exist yet"). Left out, the current value is read first,
        which is a plain overwrite that still records history.
        """
        check_ref_name(name)
        check_digest(target)
        self._check_target(name, target)
        if expected is _UNSET:
            expected = self.get(name)
        return self.catalog.set_ref(name, target, expected=expected, actor=self.actor, reason=reason, at=self._now())

    def _check_target(self, name: str, target: str) -> None:
        """The target exists, and is of the kind its namespace holds."""
        entry = self.catalog.artifact(target)
        namespace = _namespace(name)
        if namespace is None:
            if entry is None and not (self.blobs is not None and self.blobs.exists(target)):
                raise NotFoundError(f"cannot point {name!r} at {target}: the store holds nothing with that digest; "
                                    "store it first")
            return
        pattern, kinds = namespace
        wanted = " or ".join(sorted(kinds))
        if entry is None:
            raise NotFoundError(f"cannot point {name!r} at {target}: refs matching {pattern} point at {wanted} "
                                "artifacts, and the store holds no artifact with that digest")
        if entry.kind not in kinds:
            raise InvalidInputError(f"cannot point {name!r} at {target}: it is a {entry.kind} artifact, and refs "
                                    f"matching {pattern} point at {wanted} artifacts; give the digest of a {wanted}")

    def delete(self, name: str, *, expected: str, reason: str = "") -> RefChange:
        return self.catalog.set_ref(check_ref_name(name), None, expected=expected, actor=self.actor, reason=reason,
                                    at=self._now())

    def list(self, prefix: str = "") -> list[Ref]:
        return self.catalog.refs(prefix)

    def history(self, name: str, *, refused: bool = False) -> list[RefChange]:
        """Every move of ``name``, oldest first; with ``refused``, the refused moves too."""
        return self.catalog.history(check_ref_name(name), refused=refused)

    def changes(self, since: int = 0, prefix: str = "") -> list[RefChange]:
        """Every move after ``since`` (a ``RefChange.seq``) of refs starting with ``prefix``,
        in order: a watcher keeps the last ``seq`` it saw and reads on from there."""
        return self.catalog.ref_changes(since, prefix)

    # -- protection ------------------------------------------------------------------
    def protect(self, pattern: str, actors: Iterable[str]) -> RefRule:
        """Let only ``actors`` move refs matching ``pattern`` (replacing the pattern's rule,
        which needs an actor the current rule lists)."""
        check_pattern(pattern)
        names = sorted({a.strip() for a in ([actors] if isinstance(actors, str) else actors)})
        if not names or not all(names):
            raise InvalidInputError(f"protecting {pattern!r} needs at least one actor (e.g. 'factory-controller')")
        self.catalog.set_ref_rule(pattern, names, actor=self.actor, at=self._now())
        return next(r for r in self.catalog.ref_rules() if r.pattern == pattern)

    def unprotect(self, pattern: str) -> None:
        """Remove the rule for ``pattern`` (only an actor it lists may)."""
        check_pattern(pattern)
        if not any(r.pattern == pattern for r in self.catalog.ref_rules()):
            raise NotFoundError(f"no protection rule for {pattern!r}: see 'factory refs rules'")
        self.catalog.set_ref_rule(pattern, None, actor=self.actor, at=self._now())

    def rules(self) -> list[RefRule]:
        return self.catalog.ref_rules()
