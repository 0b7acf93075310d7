"""Which store a home and a catalog belong to, so that a process never works in a split brain.

A store has an id (a uuid), recorded twice when the store is made: in the home, as
``<home>/STORE_ID`` (written once, never replaced) beside ``<home>/CATALOG`` (where its
catalog lives, for the reader of an error message), and in the catalog's metadata
(``store-id``, and ``store-home``, the home it was made for).

``bind`` runs when a ``Store`` first uses its catalog:

- home and catalog hold the same id: go on;
- they hold different ids, or the home has an id and the catalog none (a catalog that
  is empty, new or another one): ``StoreIdentityError`` naming the catalog to point at;
- neither has one yet, but the home holds data and the catalog is empty (a process on
  another node with a fresh local catalog): ``StoreIdentityError``, never a fresh catalog;
- otherwise (a new store, or one made before stores had ids) the id is recorded just
  before the first write (the first blob or the first catalog row), catalog first, then
  the home: a read creates nothing.

``init`` (``factory init``) records the identity explicitly, and is how a server catalog
is set up and how a home is deliberately given a new or another catalog.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from factory.errors import MetaConflictError, StoreIdentityError

if TYPE_CHECKING:
    from factory.store._store import Store
    from factory.store.catalog import Catalog

__all__ = ["StoreIdentity", "HomeFiles", "bind", "init", "describe", "STORE_ID_FILE", "CATALOG_FILE"]

STORE_ID_FILE = "STORE_ID"
CATALOG_FILE = "CATALOG"
META_ID = "store-id"
META_HOME = "store-home"


@dataclass(frozen=True)
class StoreIdentity:
    """What ``init`` did: the store's id, where its home and catalog are, and what changed."""

    store_id: str
    home: str
    catalog: str
    backend: str
    schema_version: int
    created: bool
    migrations: tuple[int, ...] = field(default=())


class HomeFiles:
    """The identity files at the top of a store home, local or on any ``pyarrow.fs`` filesystem."""

    def __init__(self, store: Store):
        self.home = store.home
        self.remote = store.remote
        # A remote home is reached through the blob store's filesystem (and its credentials).
        self._blobs = store.blobs

    def _path(self, name: str) -> str:
        if not self.remote:
            return os.path.join(self.home, name)
        return self._blobs.root.rsplit("/", 1)[0] + "/" + name

    def read(self, name: str) -> str | None:
        path = self._path(name)
        try:
            if not self.remote:
                with open(path, encoding="utf-8") as f:
                    return f.read().strip() or None
            with self._blobs.fs.open_input_stream(path) as f:
                return f.read().decode("utf-8").strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return None
            raise

    def write(self, name: str, text: str) -> None:
        """Replace ``name`` atomically (a temporary file renamed over it)."""
        path = self._path(name)
        if self.remote:
            with self._blobs.fs.open_output_stream(path) as f:  # one PUT: all or nothing
                f.write(text.encode("utf-8") + b"\n")
            return
        os.makedirs(self.home, exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)

    def write_once(self, name: str, text: str) -> str:
        """Create ``name`` holding ``text`` unless it exists; what it holds afterwards."""
        path = self._path(name)
        if self.remote:
            # Object stores have no create-if-absent here: read, then write. Two stores racing to
            # stamp one new remote home within that window is the one case this cannot catch.
            existing = self.read(name)
            if existing is None:
                self.write(name, text)
                return text
            return existing
        os.makedirs(self.home, exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: the first writer wins, whole
            return text
        except FileExistsError:
            return self.read(name) or ""
        finally:
            os.unlink(tmp)

    def holds_data(self) -> bool:
        """Whether the home holds any blob (every artifact record is one)."""
        if not self.remote:
            try:
                return any(e != "tmp" for e in os.listdir(os.path.join(self.home, "blobs")))
            except (FileNotFoundError, NotADirectoryError):
                return False
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self._blobs.root, allow_not_found=True)
        return any(info.base_name != "tmp" for info in self._blobs.fs.get_file_info(selector))


def _not_this_catalog(store: Store, catalog: Catalog, home_id: str, catalog_id: str | None, recorded: str | None) -> StoreIdentityError:
    where = recorded or "the catalog it was made with"
    if catalog_id is None:
        state = "holds no store id"
        if catalog.schema_version() == 0:
            state = "does not exist" if catalog.backend == "sqlite" else "is not set up"
        what = f"the catalog {catalog.location} {state}"
    else:
        what = f"the catalog {catalog.location} belongs to store {catalog_id}"
    return StoreIdentityError(
        f"the store home {store.home} belongs to store {home_id}, but {what}: point FACTORY_CATALOG (or --catalog) at "
        f"{where}. To give this home another catalog on purpose, run `factory init --home {store.home} "
        f"--catalog {catalog.location}`",
        store.home, catalog.location,
    )


def _another_home(store: Store, catalog: Catalog, catalog_id: str, its_home: str | None) -> StoreIdentityError:
    return StoreIdentityError(
        f"the catalog {catalog.location} belongs to store {catalog_id}"
        + (f", whose home is {its_home}" if its_home else "")
        + f"; the home {store.home} is not that store's: point FACTORY_HOME (or --home) at "
        + (its_home or "that store's home")
        + ", or FACTORY_CATALOG at this home's own catalog",
        store.home, catalog.location,
    )


class _Claim:
    """Records a new store's identity the first time it is called; later calls do nothing."""

    def __init__(self, store: Store, catalog: Catalog, home: HomeFiles):
        self._args = (store, catalog, home)
        self._lock = threading.RLock()
        self._done = self._running = False

    def __call__(self) -> None:
        with self._lock:
            if self._done or self._running:  # running: the claim's own catalog writes
                return
            self._running = True
            try:
                _claim(*self._args, str(uuid.uuid4()))
                self._done = True
            except BaseException:
                self._args[1].before_first_write(self)  # still unclaimed: check again on the next write
                raise
            finally:
                self._running = False


def bind(store: Store, catalog: Catalog) -> Callable[[], None] | None:
    """Check that ``store``'s home and ``catalog`` belong to one store (see the module docstring).

    For a store without an identity yet, the claim that records it: armed to run before the
    catalog's first write, and returned for the store to run before its first blob lands."""
    home = HomeFiles(store)
    home_id = home.read(STORE_ID_FILE)
    catalog_id = catalog.meta(META_ID) if catalog.schema_version() else None
    if home_id is not None:
        if catalog_id != home_id:
            raise _not_this_catalog(store, catalog, home_id, catalog_id, home.read(CATALOG_FILE))
        return None
    if catalog_id is not None:
        its_home = catalog.meta(META_HOME)
        if its_home != store.home:
            raise _another_home(store, catalog, catalog_id, its_home)
        _stamp_home(store, catalog, home, catalog_id)  # a stamp interrupted after the catalog's half
        return None
    if home.holds_data() and catalog.empty():
        raise StoreIdentityError(
            f"the store home {store.home} already holds data, but the catalog {catalog.location} "
            f"{'does not exist' if catalog.schema_version() == 0 else 'is empty'}: point FACTORY_CATALOG (or "
            "--catalog) at the catalog this home was used with (by default <home>/catalog.db). If that catalog is "
            f"lost, run `factory init --home {store.home} --catalog {catalog.location}` to start this one for it "
            "(what the lost catalog recorded will not be listed)",
            store.home, catalog.location,
        )
    claim = _Claim(store, catalog, home)
    catalog.before_first_write(claim)
    return claim


def _claim(store: Store, catalog: Catalog, home: HomeFiles, store_id: str) -> str:
    """Record ``store_id`` in the catalog (unless it holds one, which wins), then in the home."""
    try:
        catalog.set_meta(META_ID, store_id)
    except MetaConflictError as conflict:
        store_id = conflict.actual or store_id
        its_home = catalog.meta(META_HOME)
        if its_home not in (None, store.home):
            raise _another_home(store, catalog, store_id, its_home) from None
    try:
        catalog.set_meta(META_HOME, store.home)
    except MetaConflictError:
        pass
    return _stamp_home(store, catalog, home, store_id)


def _stamp_home(store: Store, catalog: Catalog, home: HomeFiles, store_id: str) -> str:
    held = home.write_once(STORE_ID_FILE, store_id)
    if held != store_id:
        raise _not_this_catalog(store, catalog, held, store_id, home.read(CATALOG_FILE))
    home.write(CATALOG_FILE, catalog.location)
    return store_id


def init(store: Store) -> StoreIdentity:
    """Set up ``store``'s catalog (migrations) and record the store's identity in it and in the
    home; an existing, matching identity is kept. A home may be given a catalog that holds no
    store yet; a catalog that holds another store is refused."""
    catalog = store.bare_catalog
    applied = catalog.migrate()
    home = HomeFiles(store)
    home_id = home.read(STORE_ID_FILE)
    catalog_id = catalog.meta(META_ID)
    if home_id is not None and catalog_id is not None and home_id != catalog_id:
        raise _not_this_catalog(store, catalog, home_id, catalog_id, home.read(CATALOG_FILE))
    if home_id is None and catalog_id is not None:
        its_home = catalog.meta(META_HOME)
        if its_home not in (None, store.home):
            raise _another_home(store, catalog, catalog_id, its_home)
    store_id = _claim(store, catalog, home, home_id or catalog_id or str(uuid.uuid4()))
    return StoreIdentity(store_id, store.home, catalog.location, catalog.backend, catalog.schema_version(),
                         created=home_id is None and catalog_id is None,
                         migrations=tuple(m.version for m in applied))


def describe(store: Store) -> dict[str, object]:
    """What is known about a store's catalog and identity, changing nothing."""
    from factory.store._schema import LATEST

    catalog = store.bare_catalog
    home = HomeFiles(store)
    version = catalog.schema_version()
    current = version == LATEST
    catalog_id = catalog.meta(META_ID) if current else None
    home_id = home.read(STORE_ID_FILE)
    return {
        "backend": catalog.backend,
        "location": catalog.location,
        "schema_version": version,
        "latest_schema_version": LATEST,
        "store_id": catalog_id,
        "catalog_home": catalog.meta(META_HOME) if current else None,
        "home": store.home,
        "home_store_id": home_id,
        "home_catalog": home.read(CATALOG_FILE),
        "matches": None if home_id is None or not current else home_id == catalog_id,
    }
