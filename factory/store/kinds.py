"""Artifact kinds: an open set of registered names.

The store registers its own kinds below. A layer registers its kinds once, in the
module that defines them (``register_kind("policy-result", "...")``), and then records
artifacts of that kind; adding an artifact of an unregistered kind is refused, so a
typo never becomes a new kind. Reading needs no registration: a record of a kind this
process never registered (a layer not imported here) still loads.
"""

from __future__ import annotations

import enum
import re
import threading

from factory.errors import InvalidInputError

__all__ = ["ArtifactKind", "register_kind", "known_kinds", "check_kind", "check_kind_name"]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_KINDS: dict[str, str] = {}
_LOCK = threading.Lock()


def check_kind_name(name: str) -> str:
    """``name`` if it is spelled like a kind: lowercase words joined by '-'."""
    if not isinstance(name, str) or len(name) > 64 or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{name!r} is not a valid artifact kind: use lowercase letters and digits in '-'-separated words "
            "(e.g. 'policy-result')"
        )
    return name


def register_kind(name: str, description: str = "") -> str:
    """Make ``name`` a kind artifacts may have; registering it again changes nothing."""
    check_kind_name(name)
    with _LOCK:
        if not _KINDS.get(name):
            _KINDS[name] = description
    return name


def known_kinds() -> dict[str, str]:
    """Every registered kind and its description, by name."""
    with _LOCK:
        return dict(sorted(_KINDS.items()))


def check_kind(name: str) -> str:
    """``name`` if it is a registered kind; else an error naming it and how to register it."""
    check_kind_name(str(name))
    if str(name) not in _KINDS:
        raise InvalidInputError(
            f"artifact kind {name!r} is not registered: call factory.store.register_kind({str(name)!r}, "
            "'what it is') in the module that defines it, before recording artifacts of that kind "
            f"(registered: {', '.join(known_kinds())})"
        )
    return str(name)


class ArtifactKind(enum.StrEnum):
    """The kinds the store itself registers."""

    BLOB = "blob"
    TREE = "tree"
    DATASET = "dataset"
    FEATURE_VIEW = "feature-view"
    EMBEDDING_COLLECTION = "embedding-collection"
    EXTERNAL = "external"
    RUN = "run"
    CHECKPOINT = "checkpoint"
    TRAINING_CONFIG = "training-config"
    CODE = "code"
    ENVIRONMENT = "environment"
    MODEL = "model"
    EVALUATION = "evaluation"
    ATTESTATION = "attestation"
    TICKET = "ticket"
    DEPLOYMENT = "deployment"


_STORE_KINDS = {
    ArtifactKind.BLOB: "bytes stored as one content-addressed blob",
    ArtifactKind.TREE: "a directory: a manifest of blobs by relative path",
    ArtifactKind.DATASET: "a dataset version on Lance, identified by its canonical rows",
    ArtifactKind.FEATURE_VIEW: "a feature view pinned to a dataset version",
    ArtifactKind.EMBEDDING_COLLECTION: "a version of an embedding collection",
    ArtifactKind.EXTERNAL: "data outside the store (a file or URI) recorded by size, SHA-256 and time",
    ArtifactKind.RUN: "something that executed: a training run, a gate run, a pipeline step",
    ArtifactKind.CHECKPOINT: "a training checkpoint",
    ArtifactKind.TRAINING_CONFIG: "a training configuration",
    ArtifactKind.CODE: "a code version",
    ArtifactKind.ENVIRONMENT: "a software environment",
    ArtifactKind.MODEL: "a model package",
    ArtifactKind.EVALUATION: "an evaluation of a model",
    ArtifactKind.ATTESTATION: "a signed attestation about an artifact",
    ArtifactKind.TICKET: "a remediation ticket",
    ArtifactKind.DEPLOYMENT: "a deployment of a model",
}
for _kind, _description in _STORE_KINDS.items():
    register_kind(str(_kind), _description)
