"""Model packages: write one into the store, load one back ready for inference.

A package is safetensors weights, ``contract.json``, ``architecture.json`` (name,
version, code digest and config of the architecture), a model card and
``metrics.json``. Each file is a blob; the manifest of their digests is a blob too,
and its digest is the package's identity and the digest of its ``model`` artifact,
whose parents are the training inputs. Loading never unpickles anything.

Weights above ``max_shard_bytes`` (1 GiB by default) are written as Hugging Face
shards (``model-00001-of-0000N.safetensors`` and ``model.safetensors.index.json``),
one shard at a time, streamed into the store; loading reads each file straight into
the module's tensors, verified, so a package loads in about its weights' size of
memory (see ``_weights``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

import factory.contract._files as _files
from factory._untrusted import load_json
from factory.contract._assemble import build_module, read_architecture, read_contract, read_header
from factory.contract._card import check_metrics, render_card
from factory.contract._checks import (
    check_signature,
    compare_state,
    name_outputs,
    raise_if_any,
    state_of_module,
    to_tensors,
)
from factory.contract._safetensors import plain_tensors, save_tensors
from factory.contract._weights import (
    DEFAULT_SHARD_BYTES,
    index_bytes,
    plan_shards,
    shard_name,
    shard_stream,
    weights_digest,
)
from factory.contract._schema import Contract, Digest, Provenance, canonical_json
from factory.contract.architectures import REF_ATTRIBUTE, ArchitectureRef, ArchitectureRegistry, default_registry
from factory.errors import ContractViolationError, InvalidInputError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from factory.store import Artifact, Store

__all__ = ["ModelPackageMeta", "ModelPackage", "LoadedModel", "package", "load", "export"]

log = logging.getLogger(__name__)


class ModelPackageMeta(BaseModel):
    """The metadata of a ``model`` artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["factory.model-package/v1"] = _files.FORMAT
    files: dict[str, Digest]
    contract_digest: Digest
    architecture: str
    architecture_code: Digest
    task: str | None = None
    metrics: dict[str, float] = {}
    provenance: Provenance = Provenance()

    @property
    def weights_digest(self) -> str:
        """The digest of the weights: ``model.safetensors``'s, or for shards one over every shard's (see
        ``_weights.weights_digest``)."""
        return weights_digest(self.files)


@dataclass(frozen=True)
class ModelPackage:
    """A package as written: its digest, contract, architecture and store record."""

    digest: str
    contract: Contract
    architecture: ArchitectureRef
    metrics: dict[str, float]
    artifact: Artifact


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A package's module, in eval mode, with the contract it answers to."""

    digest: str
    contract: Contract
    architecture: ArchitectureRef
    module: nn.Module = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Run the model on ``{input name: array or tensor}``; returns ``{output name: tensor}``."""
        import torch

        tensors = to_tensors(self.contract, inputs)
        with torch.inference_mode():
            raw = self.module(*tensors)
        return name_outputs(raw, self.contract)

    __call__ = predict


def _reference(model: nn.Module, architecture: ArchitectureRef | None,
               registry: ArchitectureRegistry) -> ArchitectureRef:
    ref = architecture if architecture is not None else getattr(model, REF_ATTRIBUTE, None)
    if ref is None:
        raise InvalidInputError(
            "cannot tell which architecture this module is: build it with ArchitectureRegistry.build(name, config) "
            "or pass architecture=registry.get(name).ref(config)"
        )
    installed = registry.get(ref.name, ref.version)
    if installed.code_digest != ref.code_digest:
        raise InvalidInputError(
            f"the reference names {ref.label} with code {ref.code_digest}, but the installed code is "
            f"{installed.code_digest}: rebuild the reference with registry.get({ref.name!r}).ref(config)"
        )
    return ref


def package(
    store: Store,
    model: nn.Module,
    contract: Contract,
    *,
    architecture: ArchitectureRef | None = None,
    metrics: Mapping[str, float] | None = None,
    parents: Iterable[str] = (),
    description: str = "",
    license: str | None = None,
    registry: ArchitectureRegistry | None = None,
    max_shard_bytes: int | None = DEFAULT_SHARD_BYTES,
) -> ModelPackage:
    """Write ``model`` as a package into ``store``; return it with its digest.

    The weights must fit the architecture exactly (names, shapes, dtypes): a module
    that its architecture cannot rebuild is refused here rather than at load time.
    Whether the contract fits the model is for ``validate``. Parents of the ``model``
    artifact: ``parents`` plus each provenance digest that the store holds. Weights
    larger than ``max_shard_bytes`` are written as shards of at most that size
    (a larger tensor gets a shard of its own); ``None`` keeps one file.
    """
    import torch

    registry = registry or default_registry()
    ref = _reference(model, architecture, registry)
    arch = registry.get(ref.name, ref.version)
    metrics = check_metrics(metrics)
    with torch.device("meta"):
        blank = arch.build(ref.config)
    raise_if_any(compare_state(state_of_module(blank), state_of_module(model), arch.label),
                 f"the module does not match {arch.label} with config {ref.config}")

    files = {
        _files.CONTRACT: contract.to_json(),
        _files.ARCHITECTURE: ref.to_json(),
        _files.METRICS: canonical_json(metrics),
        _files.CARD: render_card(contract, ref, metrics, task=arch.task, license=license,
                                 description=description).encode(),
    }
    digests = {**_write_weights(store, model.state_dict(), max_shard_bytes),
               **{name: store.blobs.put_bytes(data) for name, data in files.items()}}
    digest = store.blobs.put_bytes(_files.manifest_bytes(digests))

    recorded = [d for d in contract.provenance.digests() if store.artifacts.exists(d)]
    unrecorded = sorted(set(contract.provenance.digests()) - set(recorded))
    if unrecorded:
        log.info("provenance digests %s are not artifacts in the store; kept in metadata only", unrecorded)
    meta = ModelPackageMeta(
        files=digests, contract_digest=contract.digest, architecture=ref.label,
        architecture_code=ref.code_digest, task=arch.task, metrics=metrics, provenance=contract.provenance,
    )
    artifact = store.artifacts.add("model", digest=digest, metadata=meta, parents=[*parents, *recorded],
                                   name=contract.name)
    log.info("packaged %s as %s", contract.name, digest)
    return ModelPackage(digest, contract, ref, metrics, artifact)


def _write_weights(store: Store, state: Mapping[str, torch.Tensor], max_shard_bytes: int | None) -> dict[str, str]:
    """Store the weights as one file, or as shards written one at a time; return file name -> digest."""
    sizes = {name: t.numel() * t.element_size() for name, t in state.items()}
    total = sum(sizes.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        return {_files.WEIGHTS: store.blobs.put_bytes(save_tensors(state))}
    if max_shard_bytes < 1:
        raise InvalidInputError(f"max_shard_bytes is {max_shard_bytes}: give a positive size, or None for one file")
    state = plain_tensors(state)  # tied weights are refused across shards too, as for one file
    shards = plan_shards(sizes, max_shard_bytes)
    digests, weight_map = {}, {}
    for number, names in enumerate(shards, start=1):
        name = shard_name(number, len(shards))
        stream, size = shard_stream({n: state[n] for n in names})
        digests[name] = store.blobs.write_from(stream, size_hint=size).commit()
        weight_map.update(dict.fromkeys(names, name))
    digests[_files.INDEX] = store.blobs.put_bytes(index_bytes(weight_map, total))
    log.info("wrote %d bytes of weights as %d shards", total, len(shards))
    return digests


def load(
    store: Store | None,
    source: str | os.PathLike[str],
    *,
    registry: ArchitectureRegistry | None = None,
    allow_code_mismatch: bool = False,
) -> LoadedModel:
    """The package ``source`` (a model digest or prefix in ``store``, or a package folder), ready for inference.

    Raises ``UnsafePackageError`` for pickles and their like (refused before they are
    read), ``CorruptBlobError`` for tampered blobs and ``ContractViolationError``
    naming every problem with the contract, the architecture or the weights.
    """
    registry = registry or default_registry()
    files = _files.open_files(source, store)
    where = files.source
    contract, problems = read_contract(files.files[_files.CONTRACT])
    ref, arch, arch_problems = read_architecture(files.files[_files.ARCHITECTURE], registry,
                                                 allow_code_mismatch=allow_code_mismatch)
    header, weight_problems = read_header(files.weights)
    raise_if_any(problems + arch_problems + weight_problems, f"cannot load {where}")
    signature = arch.expected(ref.config)
    if signature is not None:
        raise_if_any(check_signature(contract, signature, arch.label),
                     f"the contract of {where} disagrees with its weights")
    module, problems = build_module(arch, ref, header, files.weights)
    raise_if_any(problems, f"cannot load {where}")
    try:
        metrics = check_metrics(load_json(files.files[_files.METRICS], what="metrics.json",
                                          max_bytes=_files.MAX_TEXT_BYTES, error=ValueError))
    except (ValueError, AttributeError) as exc:
        raise ContractViolationError(
            f"metrics.json of {where} is not an object of numbers ({exc}): re-package the model"
        ) from None
    return LoadedModel(files.digest, contract, ref, module, metrics)


def export(store: Store, digest: str, dest: str | os.PathLike[str]) -> Path:
    """Write a stored package's files (and ``manifest.json``) to a new folder."""
    return _files.write_dir(_files.read_from_store(store, digest), dest)
