"""The architecture registry: how a package's weights become a runnable module again.

An architecture is a name, a version and a builder from a JSON config to a
``torch.nn.Module``. Its code digest is the SHA-256 of the source file that defines
the builder, so a package records exactly which code its weights were made for.
Built-ins (the MLP classifier and regressor) are always present; other
architectures come from installed distributions through the entry-point group
``factory.architectures``. Nothing is ever imported from a model package itself.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from factory._untrusted import preview
from factory.contract._schema import Digest, InputSpec, OutputSpec, canonical_json
from factory.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ENTRY_POINT_GROUP",
    "Architecture",
    "ArchitectureRef",
    "ArchitectureRegistry",
    "Signature",
    "builtin_architectures",
    "default_registry",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "factory.architectures"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
REF_ATTRIBUTE = "_factory_architecture"


class ArchitectureRef(BaseModel):
    """What a package stores in ``architecture.json``: which architecture, which code, which config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME.pattern, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    code_digest: Digest
    config: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Signature:
    """What an architecture takes and returns for a given config, for checks without running it.

    ``input_width``: values per row across all inputs once flattened and concatenated
    (``None`` when the architecture does not fix it). ``inputs``: the natural input
    layout, used to write a contract for a fresh model.
    """

    outputs: tuple[OutputSpec, ...]
    inputs: tuple[InputSpec, ...] = ()
    input_width: int | None = None


Builder = Callable[[Mapping[str, Any]], "nn.Module"]


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Architecture:
    """A named, versioned builder. ``builder`` and ``signature`` may be ``"module:attr"`` strings,
    resolved on first use so that listing architectures imports no framework."""

    name: str
    version: str
    builder: Builder | str
    signature: Callable[[Mapping[str, Any]], Signature] | str | None = None
    task: str | None = None
    description: str = ""
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidInputError(
                f"architecture name {self.name!r} is not valid: use lowercase letters, digits, '.', '_' and '-'"
            )
        if not self.version:
            raise InvalidInputError(f"architecture {self.name!r} needs a version, e.g. '1'")

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def code_digest(self) -> str:
        """SHA-256 of the source file that defines the builder."""
        if "code_digest" not in self._cache:
            self._cache["code_digest"] = _source_digest(self.builder, self.name)
        return self._cache["code_digest"]

    def ref(self, config: Mapping[str, Any]) -> ArchitectureRef:
        try:
            plain = dict(config)
            canonical_json(plain)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the config of {self.label} must be a JSON object: {exc}") from None
        return ArchitectureRef(name=self.name, version=self.version, code_digest=self.code_digest, config=plain)

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> nn.Module:
        """A fresh module for ``config`` (initialised from ``seed`` when given), tagged with its ref."""
        import torch

        ref = self.ref(config)
        builder = _resolve(self.builder)
        try:
            if seed is None:
                module = builder(ref.config)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    module = builder(ref.config)
        except Exception as exc:  # a builder refusing its config in any way is bad input, not a crash
            raise InvalidInputError(
                f"cannot build {self.label} from config {preview(ref.config, 200)}: {type(exc).__name__}: "
                f"{preview(str(exc), 500)}"
            ) from None
        if not isinstance(module, torch.nn.Module):
            raise InvalidInputError(
                f"the builder of {self.label} returned a {type(module).__name__}; it must return a torch.nn.Module"
            )
        setattr(module, REF_ATTRIBUTE, ref)
        return module

    def expected(self, config: Mapping[str, Any]) -> Signature | None:
        """The signature for ``config``, if the architecture declares one."""
        if self.signature is None:
            return None
        try:
            return _resolve(self.signature)(dict(config))
        except Exception as exc:  # pydantic's ValidationError is a ValueError; plugins may raise anything
            raise InvalidInputError(
                f"config {preview(dict(config), 200)} does not fit {self.label}: {preview(str(exc), 500)}"
            ) from None


def _source_digest(builder: Builder | str, name: str) -> str:
    try:
        if isinstance(builder, str):
            spec = importlib.util.find_spec(builder.partition(":")[0])
            path = spec.origin if spec is not None else None
        else:
            path = inspect.getsourcefile(builder)
        if path is None:
            raise OSError("no source file")
        with open(path, "rb") as f:
            return "sha256:" + hashlib.sha256(f.read()).hexdigest()
    except (OSError, TypeError, ImportError) as exc:
        raise InvalidInputError(
            f"cannot find the source of architecture {name!r} ({exc}): define its builder in a module file"
        ) from None


def builtin_architectures() -> tuple[Architecture, ...]:
    return (
        Architecture(
            "mlp-classifier", "1", "factory.contract._mlp:build_classifier",
            signature="factory.contract._mlp:classifier_signature", task="tabular-classification",
            description="Multilayer perceptron over tabular features; outputs class probabilities and a label.",
        ),
        Architecture(
            "mlp-regressor", "1", "factory.contract._mlp:build_regressor",
            signature="factory.contract._mlp:regressor_signature", task="tabular-regression",
            description="Multilayer perceptron over tabular features; outputs one value per target.",
        ),
    )


class ArchitectureRegistry:
    """Architectures by name: the built-ins plus whatever was registered or found as entry points."""

    def __init__(self, architectures: Iterable[Architecture] = ()):
        self._by_name: dict[str, Architecture] = {}
        self._broken: dict[str, str] = {}
        for arch in architectures:
            self.register(arch)

    @classmethod
    def with_builtins(cls, *, entry_points: bool = True) -> ArchitectureRegistry:
        registry = cls(builtin_architectures())
        if entry_points:
            registry.load_entry_points()
        return registry

    def register(self, arch: Architecture, *, replace: bool = False) -> Architecture:
        if not isinstance(arch, Architecture):
            raise InvalidInputError(f"cannot register a {type(arch).__name__}: build a factory.contract.Architecture")
        if arch.name in self._by_name and not replace:
            raise InvalidInputError(
                f"architecture {arch.name!r} is already registered ({self._by_name[arch.name].label}): "
                "choose another name, or pass replace=True"
            )
        self._by_name[arch.name] = arch
        self._broken.pop(arch.name, None)
        return arch

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the architectures that installed distributions declare; return their names.

        A broken plugin is logged and remembered, not fatal: asking for it by name later
        raises with the original problem, and every other architecture still works.
        """
        loaded = []
        for ep in importlib.metadata.entry_points(group=group):
            try:
                value = ep.load()
                if callable(value) and not isinstance(value, Architecture):
                    value = value()
                archs = [value] if isinstance(value, Architecture) else list(value)
                for arch in archs:
                    if arch.name in self._by_name:
                        raise InvalidInputError(
                            f"it declares {arch.name!r}, which is already registered ({self._by_name[arch.name].label})"
                        )
                    self.register(arch)
                    loaded.append(arch.name)
            except Exception as exc:  # a plugin may fail in any way; keep the others usable
                problem = f"{type(exc).__name__}: {exc}"
                log.warning("architecture entry point %r (%s) failed to load: %s", ep.name, ep.value, problem)
                self._broken.setdefault(ep.name, f"entry point {ep.value!r} failed to load ({problem})")
        return loaded

    def get(self, name: str, version: str | None = None) -> Architecture:
        arch = self._by_name.get(name)
        if arch is None:
            if name in self._broken:
                raise NotFoundError(
                    f"architecture {name!r} is unavailable: {self._broken[name]}; fix or reinstall the plugin"
                )
            raise NotFoundError(
                f"no architecture named {name!r}: choose among {self.names()} or install the distribution that "
                f"declares it in the {ENTRY_POINT_GROUP!r} entry-point group"
            )
        if version is not None and version != arch.version:
            raise NotFoundError(
                f"architecture {name!r} is installed at version {arch.version}, not {version}: "
                "install the version the package was built with"
            )
        return arch

    def build(self, name: str, config: Mapping[str, Any], *, seed: int | None = None) -> nn.Module:
        return self.get(name).build(config, seed=seed)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Architecture]:
        return iter(self._by_name[n] for n in self.names())


@functools.cache
def default_registry() -> ArchitectureRegistry:
    """The process-wide registry: built-ins plus installed entry points, loaded once."""
    return ArchitectureRegistry.with_builtins()
