"""The store actor on a PostgreSQL catalog: workers record through it, and every process sees the same store."""

from __future__ import annotations

import uuid

from factory.settings import Settings
from factory.store import Store, store_actor


def test_the_store_actor_serves_a_store_whose_catalog_is_on_postgresql(ray_cluster, postgres_url, tmp_path):
    """Tasks write through the actor; a driver opening the same home and catalog directly sees it all."""
    import ray

    settings = Settings(home=str(tmp_path / "home"), catalog=postgres_url)
    name = f"factory-store-{uuid.uuid4().hex[:8]}"
    handle = store_actor(settings.home, name=name, settings=settings)
    try:

        @ray.remote(num_cpus=0.25)
        def work(i: int) -> str:
            store = store_actor(name=name)
            blob = ray.get(store.put_bytes.remote(f"shard {i}".encode()))
            ray.get(store.add_artifact.remote("model", digest=blob, name=f"shard-{i}"))
            return blob

        digests = ray.get([work.remote(i) for i in range(3)])
        ray.get(handle.set_ref.remote("model/m/dev", digests[0], expected=None, reason="first"))
        direct = Store(settings=settings)
        assert sorted(a.name for a in direct.artifacts.find("model")) == ["shard-0", "shard-1", "shard-2"]
        assert direct.refs.get("model/m/dev") == digests[0]
        assert direct.catalog_info()["matches"] is True
    finally:
        ray.kill(handle, no_restart=True)
