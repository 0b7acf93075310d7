"""Store identity: a home and its catalog name the same store, so no process works in a split brain."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from factory.errors import StoreIdentityError
from factory.store import BlobStore, Store

pytestmark = pytest.mark.catalogs


def _files(home) -> set[str]:
    return set(os.listdir(home)) if os.path.isdir(home) else set()


def test_a_new_store_records_its_id_in_home_and_catalog_on_its_first_write(store):
    """Reads of a new store write nothing; its first write leaves the same store id in the home and the catalog."""
    assert store.refs.list() == [] and store.artifacts.find() == []
    assert "STORE_ID" not in _files(store.home)
    if store.catalog.backend == "sqlite":
        assert not os.path.exists(store.settings.catalog)
    store.put_blob(b"first")
    info = store.catalog_info()
    assert info["store_id"] and info["home_store_id"] == info["store_id"] and info["matches"] is True
    assert info["home_catalog"] == store.catalog.location and info["catalog_home"] == store.home
    assert Store(settings=store.settings).artifacts.find("blob")  # opened again: it matches


def test_a_home_opened_with_another_catalog_is_refused_naming_its_own(store, tmp_path):
    """A process pointed at a fresh catalog for an existing home is told which catalog to use, and writes nothing."""
    store.put_blob(b"data")
    blobs = sorted(store.blobs.digests())
    stray = str(tmp_path / "stray" / "catalog.db")
    wrong = Store(settings=replace(store.settings, catalog=stray))
    with pytest.raises(StoreIdentityError, match=f"point FACTORY_CATALOG .* at {store.catalog.location}"):
        wrong.refs.list()
    with pytest.raises(StoreIdentityError):
        wrong.put_blob(b"more")
    assert not os.path.exists(stray) and sorted(store.blobs.digests()) == blobs


def test_a_home_holding_data_without_an_id_is_not_given_an_empty_catalog(store, tmp_path):
    """Blobs from before store ids, and a catalog that does not exist: an error, never a fresh catalog beside them."""
    BlobStore(store.uri("blobs")).put(b"written before stores had ids")  # not through a Store: no id recorded
    stray = str(tmp_path / "elsewhere.db")
    with pytest.raises(StoreIdentityError, match="already holds data.*factory init"):
        Store(settings=replace(store.settings, catalog=stray)).refs.list()
    assert not os.path.exists(stray)


def test_a_catalog_of_another_home_is_refused_naming_that_home(store, tmp_path):
    """Two homes on one catalog would each miss the other's blobs: the second home is refused."""
    store.put_blob(b"first home's")
    other = Store(settings=replace(store.settings, home=str(tmp_path / "other-home")))
    with pytest.raises(StoreIdentityError, match=f"point FACTORY_HOME .* at {store.home}"):
        other.put_blob(b"second home's")
    assert _files(other.home) <= {"blobs"}


def test_init_is_idempotent_and_gives_a_home_a_new_catalog_only_on_purpose(store, tmp_path):
    """`init` twice keeps the id; after a catalog is lost, `init` with a new one is how the home goes on."""
    first = store.init()
    assert first.created and first.schema_version > 0
    again = Store(settings=store.settings).init()
    assert again.store_id == first.store_id and not again.created and again.migrations == ()
    replacement = replace(store.settings, catalog=str(tmp_path / "replacement.db"))
    with pytest.raises(StoreIdentityError):
        Store(settings=replacement).refs.list()
    adopted = Store(settings=replacement).init()
    assert adopted.store_id == first.store_id and adopted.catalog != first.catalog
    assert Store(settings=replacement).refs.list() == []
    assert open(os.path.join(store.home, "CATALOG")).read().strip() == adopted.catalog


def test_a_home_that_lost_its_id_file_gets_it_back_from_its_own_catalog(store):
    """A store whose id reached the catalog but not the home (a crash in between) is completed on next open."""
    store.put_blob(b"x")
    store_id = store.catalog_info()["store_id"]
    os.remove(os.path.join(store.home, "STORE_ID"))
    again = Store(settings=store.settings)
    assert again.artifacts.find("blob") and again.catalog_info()["home_store_id"] == store_id


def test_a_store_opened_while_another_process_is_mid_claim_finishes_that_claim(store):
    """A second process that opens the store between the first's two claim steps (id recorded, home not
    yet) joins the same identity instead of refusing the catalog as another home's."""
    from factory.store._identity import META_ID

    catalog = store.bare_catalog
    catalog.migrate()
    catalog.set_meta(META_ID, "0" * 32)  # the first process stopped here
    other = Store(settings=store.settings)
    other.put_blob(b"second")
    info = other.catalog_info()
    assert info["store_id"] == "0" * 32 and info["matches"] is True and info["catalog_home"] == store.home


def test_a_store_that_just_claimed_its_home_can_be_sent_to_a_worker(store):
    """A new store pickled right after its first write (as Tune does with a trial's closure) arrives
    whole on the other side and still matches its home there."""
    import ray.cloudpickle as cloudpickle

    store.put_blob(b"first")
    copy = cloudpickle.loads(cloudpickle.dumps(store))
    copy.put_blob(b"second")
    assert copy.catalog_info()["matches"] is True
