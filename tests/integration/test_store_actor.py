"""The store actor: one named, detached actor gives every Ray worker the same store."""

from __future__ import annotations

import uuid

import pytest

from factory.store import Store, store_actor


@pytest.fixture
def actor(ray_cluster, tmp_path):
    import ray

    name = f"factory-store-{uuid.uuid4().hex[:8]}"
    handle = store_actor(str(tmp_path / "home"), name=name)
    yield handle, name, tmp_path / "home"
    ray.kill(handle, no_restart=True)


def test_workers_record_through_the_actor_and_the_driver_sees_it(actor):
    """Tasks on the cluster put blobs and artifacts through the actor; the store holds them."""
    import ray

    handle, name, home = actor

    @ray.remote(num_cpus=0.25)
    def work(i: int) -> str:
        store = store_actor(name=name)  # looked up by name, not passed
        blob = ray.get(store.put_bytes.remote(f"shard {i}".encode()))
        ray.get(store.add_artifact.remote("blob", digest=blob, name=f"shard-{i}"))
        return blob

    digests = ray.get([work.remote(i) for i in range(4)])
    local = Store(home)
    assert [local.blobs.get(d) for d in digests] == [f"shard {i}".encode() for i in range(4)]
    assert sorted(a.name for a in local.artifacts.find("blob")) == [f"shard-{i}" for i in range(4)]


def test_actor_restart_keeps_everything(actor):
    """Killed and restarted, the actor serves what the store already held."""
    import ray

    handle, name, home = actor
    digest = ray.get(handle.put_bytes.remote(b"durable"))
    ray.get(handle.add_artifact.remote("model", digest=digest))  # model/<name>/<env> refs point at models
    ray.get(handle.set_ref.remote("model/m/production", digest, expected=None, reason="first"))
    ray.kill(handle, no_restart=False)
    again = store_actor(name=name)
    assert ray.get(again.get_ref.remote("model/m/production"), timeout=60) == digest
    assert ray.get(again.get_bytes.remote(digest)) == b"durable"
