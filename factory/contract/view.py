"""A read-only view of a stored model package, for code that judges packages (gates, reports).

``open_package(store, digest)`` checks the manifest (unsafe or unknown file names are
refused before anything is read) and reads the small files: contract, architecture
reference, model card and metrics. The weights are read only when asked for
(``weights()``, ``weights_header()``), and every file is verified against its digest
on read. Nothing here unpickles or builds a module; ``load()`` does that through
``factory.contract.load`` when a caller needs predictions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import factory.contract._files as _files
from factory.contract._card import check_metrics, parse_card
from factory.contract._schema import Contract
from factory.contract.architectures import ArchitectureRef
from factory.errors import ContractViolationError, InvalidInputError

if TYPE_CHECKING:
    import torch

    from factory.contract._safetensors import Header
    from factory.contract.architectures import ArchitectureRegistry
    from factory.contract.packages import LoadedModel
    from factory.store import Store

__all__ = ["PackageView", "open_package"]

_SMALL = (_files.CONTRACT, _files.ARCHITECTURE, _files.CARD, _files.METRICS)


@dataclass(frozen=True, eq=False)
class PackageView:
    """A stored package's contract, card, metrics, architecture and file list; weights on demand."""

    digest: str
    contract: Contract
    architecture: ArchitectureRef
    card: str
    metrics: Mapping[str, float]
    files: Mapping[str, str]
    store: Store = field(repr=False)

    @property
    def name(self) -> str:
        return self.contract.name

    def read(self, name: str) -> bytes:
        """One file's bytes, verified against its digest (pickles and zips refused unread)."""
        if name not in self.files:
            raise InvalidInputError(f"package {self.digest} has no file {name!r}: it holds {sorted(self.files)}")
        data = self.store.blobs.get(self.files[name])
        _files._sniff(name, data, f"package {self.digest}")
        return data

    def card_metadata(self) -> dict[str, Any]:
        """The model card's YAML front matter; raises ``ContractViolationError`` if it does not parse."""
        return parse_card(self.card)

    @property
    def weight_files(self) -> tuple[str, ...]:
        return tuple(sorted(n for n in self.files if n.endswith(".safetensors")))

    def weights_header(self, name: str | None = None) -> Header:
        """The checked safetensors header of the weights (``ContractViolationError`` if it is malformed)."""
        from factory.contract._safetensors import check_header

        name = name or _files.WEIGHTS
        return check_header(self.read(name), file=name)

    def weights(self) -> dict[str, torch.Tensor]:
        """Every tensor of every weights file, loaded with safetensors (no code runs)."""
        from factory.contract._safetensors import load_tensors

        out: dict[str, torch.Tensor] = {}
        for name in self.weight_files:
            out.update(load_tensors(self.read(name), file=name)[1])
        return out

    def load(self, *, registry: ArchitectureRegistry | None = None) -> LoadedModel:
        """The package as a runnable model, through ``factory.contract.load``."""
        from factory.contract.packages import load

        return load(self.store, self.digest, registry=registry)


def open_package(store: Store, digest: str) -> PackageView:
    """A view of the ``model`` artifact ``digest`` (or a unique prefix of it).

    Raises ``UnsafePackageError`` for a manifest naming pickles and their like,
    ``ContractViolationError`` for a malformed package, ``CorruptBlobError`` for a
    tampered file, ``InvalidInputError`` when the digest is not a model.
    """
    from factory.store import ArtifactKind

    digest = store.artifacts.resolve(digest)
    artifact = store.artifacts.get(digest)
    if artifact.kind != ArtifactKind.MODEL:
        raise InvalidInputError(f"{digest} is a {artifact.kind} artifact, not a model package: give a model digest")
    where = f"package {digest}"
    manifest = _files._parse_manifest(store.blobs.get(digest), where)
    _files._check_names(manifest, where)
    small = {}
    for name in _SMALL:
        data = store.blobs.get(manifest[name])
        _files._sniff(name, data, where)
        small[name] = data
    try:
        contract = Contract.from_json(small[_files.CONTRACT])
        architecture = ArchitectureRef.model_validate_json(small[_files.ARCHITECTURE])
        metrics = check_metrics(json.loads(small[_files.METRICS]))
        card = small[_files.CARD].decode("utf-8")
    except (ValueError, AttributeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ContractViolationError(f"{where} does not parse ({exc}): validate it with 'factory contract validate'") \
            from None
    return PackageView(digest, contract, architecture, card, metrics, dict(manifest), store)
