"""Cluster-wide access to one store through a named Ray actor, for where nodes cannot open it.

Which to use when:

- **Open the store directly** (``Store()`` on every node) on a real cluster: the home on
  object storage (``FACTORY_HOME=s3://...``) and the catalog on a server database
  (``FACTORY_CATALOG``) are set on every node (``cluster/raycluster.yaml``,
  ``cluster/ray-up.yaml``). Each task then reads and writes blobs and datasets itself,
  in parallel, with no hop through one process; refs still move atomically in the
  catalog. This is the default for training workers, Serve replicas and pipeline steps.
- **The store actor** (``store_actor()``), when a node cannot open the store: the
  embedded default (a local home and a SQLite catalog on the driver's disk, which
  other processes on other hosts cannot reach), and clients without the store's
  credentials, which send plain values to the one process that holds them.

``StoreService`` holds the logic and is usable without Ray; ``store_actor`` is the only
place that touches Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from factory.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["StoreService", "store_actor", "ACTOR_NAME", "NAMESPACE"]

ACTOR_NAME = "factory-store"
NAMESPACE = "factory"


class StoreService:
    """The store's operations, taking and returning plain values that pickle cheaply."""

    def __init__(self, home: str | None = None, settings: Settings | None = None):
        from factory.store._store import Store

        self.store = Store(home, settings=settings)

    def home(self) -> str:
        return self.store.home

    # blobs
    def put_bytes(self, data: bytes) -> str:
        return self.store.blobs.put_bytes(data)

    def get_bytes(self, digest: str) -> bytes:
        return self.store.blobs.get(digest)

    # artifacts and lineage
    def register_kind(self, name: str, description: str = "") -> str:
        """Register a layer's kind in the actor's process as well: kinds are registered per process."""
        from factory.store.kinds import register_kind

        return register_kind(name, description)

    def add_artifact(self, kind: str, *, digest: str | None = None, metadata: dict[str, Any] | None = None,
                     parents: list[str] | tuple[str, ...] = (), name: str | None = None) -> dict[str, Any]:
        art = self.store.artifacts.add(kind, digest=digest, metadata=metadata, parents=parents, name=name)
        return art.model_dump(mode="json")

    def get_artifact(self, digest: str) -> dict[str, Any]:
        return self.store.artifacts.get(digest).model_dump(mode="json")

    def parents(self, digest: str) -> list[str]:
        return self.store.lineage.parents(digest)

    def children(self, digest: str) -> list[str]:
        return self.store.lineage.children(digest)

    # refs
    def get_ref(self, name: str) -> str | None:
        return self.store.refs.get(name)

    def set_ref(self, name: str, target: str, *, expected: str | None, reason: str = "") -> dict[str, Any]:
        """Move a ref as the actor this service was started with (its settings' ``actor``)."""
        return self.store.refs.set(name, target, expected=expected, reason=reason).__dict__

    # datasets
    def add_dataset(self, table: pa.Table, *, name: str, key: list[str] | tuple[str, ...] = (),
                    parents: list[str] | tuple[str, ...] = (), allow_schema_change: bool = False) -> Any:
        return self.store.datasets.add(table, name=name, key=key, parents=parents, allow_schema_change=allow_schema_change)

    def get_dataset(self, ref: str) -> Any:
        return self.store.datasets.get(ref)

    def read_dataset(self, ref: str, columns: list[str] | None = None) -> pa.Table:
        return self.store.datasets.read(ref, columns=columns)


def store_actor(home: str | None = None, *, name: str = ACTOR_NAME, namespace: str = NAMESPACE,
                num_cpus: float = 0.05, settings: Settings | None = None):
    """The cluster's store actor, started on first call (detached, so it outlives drivers)."""
    import ray

    remote = ray.remote(StoreService).options(
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=num_cpus,
        max_restarts=-1,
        max_task_retries=3,
    )
    return remote.remote(home, settings)
