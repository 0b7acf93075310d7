"""``Store``: one root holding blobs, the catalog, datasets, features and embeddings.

Layout of a store home (a local folder or a ``pyarrow.fs`` URI)::

    <home>/blobs/<d[:2]>/<d>     content-addressed blobs (artifact records and tree manifests included)
    <home>/blobs/tmp/            writes in progress
    <home>/datasets/<name>.lance dataset versions, one Lance dataset per name
    <home>/catalog.db            the artifact index, refs and runs (SQLite, WAL; created by the first write),
                                 unless FACTORY_CATALOG names another file or a postgresql:// URL
    <home>/STORE_ID              the store's id (written once); <home>/CATALOG: where its catalog is
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO

from factory.errors import InvalidInputError
from factory.settings import Settings
import factory.store._fs as _fs
from factory.store._hashing import HashingReader
from factory.store.blobs import BlobStore, Progress, StagedBlob
from factory.store.catalog import Catalog

if TYPE_CHECKING:
    from factory.store._verify import VerifyReport
    from factory.store._identity import StoreIdentity
    from factory.store.artifacts import Artifact, ArtifactStore
    from factory.store.datasets import DatasetStore
    from factory.store.embeddings import EmbeddingStore
    from factory.store.features import FeatureStore
    from factory.store.lineage import Lineage
    from factory.store.refs import Refs
    from factory.store.runs import Runs
    from factory.store.trees import TreeStore

__all__ = ["Store"]


_join = _fs.join


class Store:
    """The whole store. Cheap to build; the heavy parts (Lance, Ray) load on first use."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        settings = settings or Settings.from_env()
        home = os.fspath(home) if home is not None else settings.home
        self.home = _fs.check_home(home)  # a home that cannot be one fails here, before any write
        if self.home.startswith("file://"):
            self.home = self.home.removeprefix("file://")
        self.remote = "://" in self.home
        self.settings = settings
        self.clock = clock
        self.blobs = BlobStore(_join(self.home, "blobs"), fsync=settings.fsync, settings=settings, home=self.home)
        self.blobs.before_first_write = self._before_first_blob
        self._claim: Callable[[], None] | None = None
        self._given_catalog = catalog
        if catalog is None:
            location = settings.catalog
            if location is None:
                if self.remote:
                    raise InvalidInputError(
                        f"the store home {home} is remote: set FACTORY_CATALOG to a postgresql:// URL (or a local "
                        "path for a SQLite catalog on one machine)"
                    )
                location = _join(self.home, "catalog.db")
            self._catalog_location = location

    @functools.cached_property
    def bare_catalog(self) -> Catalog:
        """The catalog, before the check that it is this home's (``factory init`` and ``catalog info`` use it)."""
        from factory.store.catalog import open_catalog

        return self._given_catalog or open_catalog(self._catalog_location)

    @functools.cached_property
    def catalog(self) -> Catalog:
        """The catalog (``Settings.catalog``: a SQLite file, created by the first write, or a
        ``postgresql://`` URL), once checked to be this home's: a mismatch raises ``StoreIdentityError``."""
        from factory.store._identity import bind

        self._claim = bind(self, self.bare_catalog)
        return self.bare_catalog

    def __getstate__(self) -> dict:
        # A store sent to a Ray worker or a Tune trial checks its identity again there: the
        # claim (and the catalog it armed) belongs to this process, and holds its lock.
        state = self.__dict__.copy()
        if state.get("_claim") is not None:
            for name in ("_claim", "catalog", "bare_catalog"):
                state.pop(name, None)
            state["_claim"] = None
        return state

    def _before_first_blob(self) -> None:
        """Before a blob first lands in the home: the identity check, and a new store's claim."""
        self.catalog  # noqa: B018 (the check runs when the catalog is first used)
        if self._claim is not None:
            self._claim()

    def init(self) -> StoreIdentity:
        """Set up the catalog (create it or apply its migrations) and record the store's identity
        in the catalog and the home (``factory init``); an existing, matching identity is kept."""
        from factory.store._identity import init

        identity = init(self)
        self.__dict__.pop("catalog", None)
        return identity

    def catalog_info(self) -> dict[str, object]:
        """The catalog's backend, location, schema version and store id, the home's store id,
        and whether they match (``factory catalog info``); changes nothing."""
        from factory.store._identity import describe

        return describe(self)

    # The parts below load on first use: pydantic and friends cost about 0.1 s to
    # import, which `factory store put` overlaps with hashing instead of paying up front.
    @functools.cached_property
    def artifacts(self) -> ArtifactStore:
        from factory.store.artifacts import ArtifactStore

        return ArtifactStore(self.blobs, self.catalog, clock=self.clock)

    @functools.cached_property
    def refs(self) -> Refs:
        from factory.store.refs import Refs

        return Refs(self.catalog, blobs=self.blobs, actor=self.settings.actor, clock=self.clock)

    @functools.cached_property
    def runs(self) -> Runs:
        from factory.store.runs import Runs

        return Runs(self.catalog, self.artifacts, actor=self.settings.actor, clock=self.clock)

    @functools.cached_property
    def lineage(self) -> Lineage:
        from factory.store.lineage import Lineage

        return Lineage(self.artifacts, location=self.location)

    @property
    def location(self) -> str:
        """Where the store lives, as a URI: ``file://<host><home>`` for a local home, else its URI."""
        from factory.store.external import file_uri

        return self.home if self.remote else file_uri(self.home)

    def add_external(self, source: str | os.PathLike[str], *, copy: bool = False, name: str | None = None) -> Artifact:
        """Record a file or URI outside the store (URI, size, SHA-256, mtime) as an ``external``
        artifact, to be the parent of what is made from it; its bytes are stored only if ``copy``."""
        from factory.store.external import record_external

        return record_external(self, source, copy=copy, name=name)

    def uri(self, *parts: str) -> str:
        """A location inside the store home."""
        return _join(self.home, *parts)

    @functools.cached_property
    def storage_options(self) -> dict[str, str] | None:
        """Lance's ``storage_options`` for this home (``None`` on a local disk).

        The first use on a remote home checks that it answers (see ``_fs``), so Lance
        never sits in its own retry loop against an endpoint that is not there.
        """
        if self.remote:
            _fs.filesystem(self.home, self.settings)  # fails fast, in words, if the home does not answer
        return _fs.lance_options(self.home, self.settings)

    def exists(self, location: str) -> bool:
        """Whether anything (a file, a folder, an object prefix) is at ``location`` in the home."""
        from pyarrow import fs as pafs

        filesystem, path = _fs.filesystem(location, self.settings, label=self.home)
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def put_blob(
        self,
        source: bytes | str | os.PathLike[str] | BinaryIO | HashingReader | StagedBlob,
        *,
        name: str | None = None,
        parents: Iterable[str] = (),
        progress: Progress | None = None,
    ) -> Artifact:
        """Store bytes or a file as a blob and record it as a ``blob`` artifact."""
        from factory.store.artifacts import ArtifactKind

        digest = self.blobs.put(source, progress=progress)
        if name is None and isinstance(source, (str, os.PathLike)):
            name = os.path.basename(os.fspath(source))
        elif name is None and isinstance(source, (HashingReader, StagedBlob)):
            reader = getattr(source, "reader", source)
            name = os.path.basename(reader.name) if reader.name else None
        return self.artifacts.add(
            ArtifactKind.BLOB,
            digest=digest,
            name=name,
            metadata={"size": self.blobs.size(digest)},
            parents=parents,
        )

    def verify(self, *, deep: bool = False, progress: Progress | None = None) -> VerifyReport:
        """Re-check every blob, every catalog reference and every dataset file (see ``_verify``)."""
        from factory.store._verify import verify_store

        return verify_store(self, deep=deep, progress=progress)

    @functools.cached_property
    def trees(self) -> TreeStore:
        """Folders of files of any size (checkpoints, sharded models) as ``tree`` artifacts."""
        from factory.store.trees import TreeStore

        return TreeStore(self)

    @functools.cached_property
    def datasets(self) -> DatasetStore:
        from factory.store.datasets import DatasetStore

        return DatasetStore(self)

    @functools.cached_property
    def features(self) -> FeatureStore:
        from factory.store.features import FeatureStore

        return FeatureStore(self)

    @functools.cached_property
    def embeddings(self) -> EmbeddingStore:
        from factory.store.embeddings import EmbeddingStore

        return EmbeddingStore(self)
