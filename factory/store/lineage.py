"""The lineage graph: the parent links between artifacts, walked either way.

"Where did this come from" is ``upstream``; "what depends on this" is ``downstream``.
An artifact made more than once (the same bytes from other inputs) has the parents of
every production. ``openlineage_events`` exports the graph as OpenLineage RunEvents
(spec 2-0-2; naming and runs in ``_openlineage.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from factory.store.artifacts import Artifact, ArtifactStore

__all__ = ["Lineage", "LineageNode"]


@dataclass(frozen=True)
class LineageNode:
    """An artifact and its neighbours in one direction. ``seen`` marks a node already
    expanded elsewhere in the tree (a diamond), so its subtree is not repeated."""

    artifact: Artifact
    neighbours: tuple[LineageNode, ...] = field(default_factory=tuple)
    seen: bool = False


class Lineage:
    def __init__(self, artifacts: ArtifactStore, *, location: str):
        self.artifacts = artifacts
        self.location = location

    def parents(self, digest: str) -> list[str]:
        return self.artifacts.catalog.parents(digest)

    def children(self, digest: str) -> list[str]:
        return self.artifacts.catalog.children(digest)

    def ancestors(self, digest: str) -> set[str]:
        return self._closure(digest, self.parents)

    def descendants(self, digest: str) -> set[str]:
        return self._closure(digest, self.children)

    def upstream(self, digest: str, depth: int | None = None) -> LineageNode:
        return self._tree(digest, self.parents, depth)

    def downstream(self, digest: str, depth: int | None = None) -> LineageNode:
        return self._tree(digest, self.children, depth)

    @staticmethod
    def _closure(digest: str, step) -> set[str]:
        found: set[str] = set()
        frontier = [digest]
        while frontier:
            for nxt in step(frontier.pop()):
                if nxt not in found:
                    found.add(nxt)
                    frontier.append(nxt)
        return found

    def _tree(self, digest: str, step, depth: int | None) -> LineageNode:
        expanded: set[str] = set()

        def build(d: str, level: int) -> LineageNode:
            artifact = self.artifacts.get(d)
            if d in expanded:
                return LineageNode(artifact, (), seen=True)
            expanded.add(d)
            if depth is not None and level >= depth:
                return LineageNode(artifact)
            return LineageNode(artifact, tuple(build(n, level + 1) for n in step(d)))

        return build(self.artifacts.resolve(digest), 0)

    def openlineage_events(self, digest: str) -> list[dict[str, Any]]:
        """RunEvents for ``digest`` and everything upstream of it, oldest first.

        Built with the ``openlineage-python`` client's own classes, so what is emitted
        is what its schema accepts.
        """
        from factory.store._openlineage import openlineage_events

        digest = self.artifacts.resolve(digest)
        return openlineage_events(self.artifacts, [digest, *sorted(self.ancestors(digest))], location=self.location)
