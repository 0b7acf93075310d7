"""A read-only view of a stored model package, for code that judges packages (gates, reports).

``open_package(store, digest)`` reads the package as ``factory.contract.load`` does
(``_files.read_from_store``): the manifest is checked (unsafe or unknown file names are
refused before anything is read), the small files (contract, architecture reference,
model card, metrics, and a shard index) are read within their size limits and
verified, and each weights file's first bytes are sniffed for pickles. The weights'
content is read only when asked for, through ``PackageFiles.weights``: ``weights()``
streams every file (one ``model.safetensors`` or its shards) into tensors, verified;
``weights_header()`` reads only the headers. Nothing here unpickles or builds a module;
``load()`` does that when a caller needs predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import factory.contract._files as _files
from factory._untrusted import load_json, preview
from factory.contract._card import check_metrics, parse_card
from factory.contract._schema import Contract
from factory.contract.architectures import ArchitectureRef
from factory.errors import ContractViolationError, InvalidInputError

if TYPE_CHECKING:
    import torch

    from factory.contract._files import PackageFiles
    from factory.contract._safetensors import Header
    from factory.contract.architectures import ArchitectureRegistry
    from factory.contract.packages import LoadedModel
    from factory.store import Store

__all__ = ["PackageView", "open_package"]


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
    package: PackageFiles = field(repr=False)

    @property
    def name(self) -> str:
        return self.contract.name

    def read(self, name: str) -> bytes:
        """One file's bytes, verified against its digest (pickles and zips refused unread).

        A weights file is read whole: prefer ``weights()`` and ``weights_header()``.
        """
        if name not in self.files:
            raise InvalidInputError(f"package {self.digest} has no file {name!r}: it holds {sorted(self.files)}")
        if name in self.package.files:
            return self.package.files[name]
        data = self.store.blobs.get(self.files[name])
        _files._sniff(name, data, self.package.source)
        return data

    def card_metadata(self) -> dict[str, Any]:
        """The model card's YAML front matter; raises ``ContractViolationError`` if it does not parse."""
        return parse_card(self.card)

    @property
    def weight_files(self) -> tuple[str, ...]:
        """The safetensors files of the weights, in load order (one file, or every shard)."""
        return tuple(f.name for f in self.package.weights.files)

    def weights_header(self, name: str | None = None) -> Header:
        """The checked safetensors header of one weights file, or without ``name`` of all of them as one
        (a shard index is checked against them too); read from the files' first bytes only.

        Raises ``ContractViolationError`` if a header is malformed.
        """
        if name is None:
            return self.package.weights.header()
        return self.package.weights.file_header(name)

    def weights(self) -> dict[str, torch.Tensor]:
        """Every tensor of every weights file, streamed and verified against its digest (no code runs)."""
        return self.package.weights.tensors()

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
    package = _files.read_from_store(store, digest)
    small = package.files
    try:
        contract = Contract.from_json(small[_files.CONTRACT])
        architecture = ArchitectureRef.model_validate_json(small[_files.ARCHITECTURE])
        metrics = check_metrics(load_json(small[_files.METRICS], what=_files.METRICS,
                                          max_bytes=_files.MAX_TEXT_BYTES, error=ValueError))
        card = small[_files.CARD].decode("utf-8")
    except (ValueError, AttributeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ContractViolationError(f"{package.source} does not parse ({preview(str(exc), 300)}): validate it "
                                     "with 'factory contract validate'") from None
    return PackageView(package.digest, contract, architecture, card, metrics, dict(package.manifest), store, package)
