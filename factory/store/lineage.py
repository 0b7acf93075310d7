"""The lineage graph: the parent links between artifacts, walked either way.

"Where did this come from" is ``upstream``; "what depends on this" is ``downstream``.
``openlineage_events`` exports the graph as OpenLineage RunEvents (spec 2-0-2): each
artifact that has parents is the output of one run whose inputs are those parents.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from factory.store.artifacts import Artifact, ArtifactStore

__all__ = ["Lineage", "LineageNode"]

_RUN_NAMESPACE = uuid.UUID("6f1d3c9e-2d0b-4f7a-9a51-3c2b8e1f0a77")


@dataclass(frozen=True)
class LineageNode:
    """An artifact and its neighbours in one direction. ``seen`` marks a node already
    expanded elsewhere in the tree (a diamond), so its subtree is not repeated."""

    artifact: Artifact
    neighbours: tuple[LineageNode, ...] = field(default_factory=tuple)
    seen: bool = False


class Lineage:
    def __init__(self, artifacts: ArtifactStore):
        self.artifacts = artifacts

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

    def openlineage_events(self, digest: str, *, namespace: str = "factory") -> list[dict[str, Any]]:
        """RunEvents for ``digest`` and everything upstream of it, oldest first.

        Built with the ``openlineage-python`` client's own classes, so what is emitted
        is what its schema accepts.
        """
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.serde import Serde

        digest = self.artifacts.resolve(digest)
        chain = [digest, *self.ancestors(digest)]
        records = sorted((self.artifacts.get(d) for d in chain), key=lambda a: (a.created_at, a.digest))
        events = []
        for art in records:
            if not art.parents:
                continue
            event = RunEvent(
                eventType=RunState.COMPLETE,
                eventTime=art.created_at.isoformat(),
                producer=_producer_uri(art),
                run=Run(runId=str(uuid.uuid5(_RUN_NAMESPACE, art.digest))),
                job=Job(namespace=namespace, name=f"{art.kind}/{art.name or art.digest[7:19]}"),
                inputs=[InputDataset(namespace=namespace, name=p) for p in art.parents],
                outputs=[OutputDataset(namespace=namespace, name=art.digest)],
            )
            events.append(Serde.to_dict(event))
        return events


def _producer_uri(art: Artifact) -> str:
    return f"https://github.com/factory-ai/factory/tree/{art.producer.replace('/', '-')}"
