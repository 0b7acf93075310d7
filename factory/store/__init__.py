"""The store: immutable, content-addressed state that every other layer builds on.

Imports no other factory layer. Names load lazily, so ``import factory.store`` stays
cheap for the CLI; heavy libraries (Lance, Ray) load only where they are used.

Ref namespaces (a ref's target must exist and be an artifact of its namespace's kind;
``register_ref_namespace`` adds a layer's own):

- ``dataset/<name>`` -> dataset; ``feature-view/<name>`` -> feature-view;
  ``feature-online/<name>`` -> blob (a view's materialized online table);
  ``embeddings/<name>[/<tag>]`` -> embedding-collection;
- ``model/<name>/candidates/<digest12>`` -> model (a packaged candidate);
- ``model/<name>/<env>`` -> model, env one of dev, staging, prod or a configured name;
  ``model/*/prod`` and ``model/*/staging`` are protected: by default only
  ``factory-controller`` moves them (``refs.protect`` changes who);
- ``run/<id>`` -> run (made by ``runs.start``); ``ticket/<id>`` -> ticket;
  ``policy/env/<env>`` -> environment-policy.

Refs outside these namespaces may point at any stored digest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Store",
    "BlobStore",
    "HashingReader",
    "CorruptBlob",
    "StagedBlob",
    "Artifact",
    "ArtifactKind",
    "ArtifactStore",
    "Catalog",
    "SqliteCatalog",
    "Refs",
    "Ref",
    "RefChange",
    "Lineage",
    "LineageNode",
    "DatasetStore",
    "DatasetVersion",
    "canonical_digest",
    "FeatureStore",
    "FeatureView",
    "HistoricalFeatures",
    "FeatureLog",
    "EmbeddingStore",
    "EmbeddingVersion",
    "SearchHits",
    "Encoder",
    "EncoderRef",
    "HashingEncoder",
    "SentenceEncoder",
    "store_actor",
    "StoreService",
    "check_digest",
    "is_digest",
    "canonical_json",
    "encoder_for",
    "read_table_file",
    "check_dataset_name",
    "ViewVersion",
    "register_kind",
    "known_kinds",
    "check_kind",
    "Runs",
    "Run",
    "RunState",
    "RunEvent",
    "MetricPoint",
    "RefRule",
    "register_ref_namespace",
    "ref_namespaces",
    "TreeStore",
    "TreeManifest",
    "TreeEntry",
    "PendingBlob",
    "VerifyingReader",
    "MemoryReader",
    "open_regular",
    "NotRegularFile",
    "check_output_path",
    "VerifyReport",
    "VerifyProblem",
    "FeatureLogWriter",
    "PostgresCatalog",
    "open_catalog",
    "StoreIdentity",
]

_WHERE = {
    "Store": "_store",
    "BlobStore": "blobs",
    "HashingReader": "_hashing",
    "CorruptBlob": "blobs",
    "StagedBlob": "blobs",
    "Artifact": "artifacts",
    "ArtifactKind": "kinds",
    "ArtifactStore": "artifacts",
    "Catalog": "catalog",
    "SqliteCatalog": "_sqlite",
    "Refs": "refs",
    "Ref": "refs",
    "RefChange": "refs",
    "Lineage": "lineage",
    "LineageNode": "lineage",
    "DatasetStore": "datasets",
    "DatasetVersion": "datasets",
    "canonical_digest": "_canonical",
    "FeatureStore": "features",
    "FeatureView": "features",
    "HistoricalFeatures": "features",
    "FeatureLog": "features",
    "EmbeddingStore": "embeddings",
    "EmbeddingVersion": "embeddings",
    "SearchHits": "embeddings",
    "Encoder": "embeddings",
    "EncoderRef": "embeddings",
    "HashingEncoder": "embeddings",
    "SentenceEncoder": "embeddings",
    "store_actor": "service",
    "StoreService": "service",
    "check_digest": "_digest",
    "is_digest": "_digest",
    "canonical_json": "_digest",
    "encoder_for": "embeddings",
    "read_table_file": "datasets",
    "check_dataset_name": "datasets",
    "ViewVersion": "features",
    "register_kind": "kinds",
    "known_kinds": "kinds",
    "check_kind": "kinds",
    "Runs": "runs",
    "Run": "runs",
    "RunState": "runs",
    "RunEvent": "runs",
    "MetricPoint": "runs",
    "RefRule": "refs",
    "register_ref_namespace": "refs",
    "ref_namespaces": "refs",
    "TreeStore": "trees",
    "TreeManifest": "trees",
    "TreeEntry": "trees",
    "PendingBlob": "blobs",
    "VerifyingReader": "_hashing",
    "MemoryReader": "_hashing",
    "open_regular": "_blobfs",
    "NotRegularFile": "_blobfs",
    "check_output_path": "_paths",
    "VerifyReport": "_verify",
    "VerifyProblem": "_verify",
    "FeatureLogWriter": "features",
    "PostgresCatalog": "_postgres",
    "open_catalog": "catalog",
    "StoreIdentity": "_identity",
}

if TYPE_CHECKING:
    from factory.store._canonical import canonical_digest
    from factory.store._digest import canonical_json, check_digest, is_digest
    from factory.store._hashing import HashingReader
    from factory.store._store import Store
    from factory.store.artifacts import Artifact, ArtifactStore
    from factory.store.blobs import BlobStore, CorruptBlob, StagedBlob
    from factory.store._sqlite import SqliteCatalog
    from factory.store.catalog import Catalog
    from factory.store.datasets import DatasetStore, DatasetVersion, check_dataset_name, read_table_file
    from factory.store.embeddings import (
        EmbeddingStore,
        EmbeddingVersion,
        SearchHits,
        Encoder,
        EncoderRef,
        HashingEncoder,
        SentenceEncoder,
    )
    from factory.store.embeddings import encoder_for
    from factory.store.kinds import ArtifactKind, check_kind, known_kinds, register_kind
    from factory.store.features import FeatureLog, FeatureStore, FeatureView, HistoricalFeatures, ViewVersion
    from factory.store._paths import check_output_path
    from factory.store._verify import VerifyProblem, VerifyReport
    from factory.store.features import FeatureLogWriter
    from factory.store.lineage import Lineage, LineageNode
    from factory.store.refs import Ref, RefChange, RefRule, Refs, ref_namespaces, register_ref_namespace
    from factory.store.runs import MetricPoint, Run, RunEvent, Runs, RunState
    from factory.store.service import StoreService, store_actor
    from factory.store._identity import StoreIdentity
    from factory.store._postgres import PostgresCatalog
    from factory.store.catalog import open_catalog
    from factory.store.trees import TreeEntry, TreeManifest, TreeStore
    from factory.store.blobs import PendingBlob
    from factory.store._hashing import MemoryReader, VerifyingReader
    from factory.store._blobfs import NotRegularFile, open_regular


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'factory.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"factory.store.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
