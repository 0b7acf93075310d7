"""What the store's sub-packages (datasets, features, embeddings) need of a store.

The sub-packages take a store's core parts through this protocol instead of importing
the ``Store`` facade, so the facade can build them without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from factory.settings import Settings
    from factory.store.artifacts import Artifact, ArtifactStore
    from factory.store.blobs import BlobStore
    from factory.store.catalog import Catalog
    from factory.store.refs import Refs

__all__ = ["StoreParts"]


class StoreParts(Protocol):
    """The core of one store: its home, clock, blobs, catalog, artifacts and refs."""

    home: str
    remote: bool
    settings: Settings
    clock: Callable[[], datetime] | None
    blobs: BlobStore
    catalog: Catalog
    artifacts: ArtifactStore
    refs: Refs
    storage_options: dict[str, str] | None  # Lance's, for datasets under the home

    def uri(self, *parts: str) -> str: ...

    def exists(self, location: str) -> bool: ...

    def put_blob(self, source: Any, *, name: str | None = None, parents: Iterable[str] = (),
                 progress: Any = None) -> Artifact: ...
