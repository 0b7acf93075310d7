"""The steps that turn a package's files back into a module, each returning its violations.

``load`` raises as soon as a step reports a problem; the validation harness runs
every step it can and reports all of them together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from factory._untrusted import load_json, preview
from factory.contract._checks import Violation, compare_state, state_of_header, state_of_module
from factory.contract._files import MAX_TEXT_BYTES
from factory.contract._safetensors import Header
from factory.contract._weights import Weights
from factory.contract._schema import Contract
from factory.contract.architectures import Architecture, ArchitectureRef, ArchitectureRegistry
from factory.errors import ContractViolationError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["read_contract", "read_architecture", "read_header", "build_module", "pydantic_violations"]


def _loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def pydantic_violations(prefix: str, exc: ValidationError) -> list[Violation]:
    out = []
    for err in exc.errors(include_url=False):
        actual = "missing" if err["type"] == "missing" else preview(err.get("input"))
        out.append(Violation(_loc(prefix, err["loc"]), err["msg"].removeprefix("Value error, "), actual,
                             f"fix {prefix}.json"))
    return out


def _strict_json(data: bytes, prefix: str, file: str) -> list[Violation]:
    """Violations of what pydantic's parser lets through: duplicate keys (the last would win), NaN, depth."""
    try:
        load_json(data, what=file, max_bytes=MAX_TEXT_BYTES, error=ContractViolationError)
    except ContractViolationError as exc:
        return [Violation(prefix, "a JSON object with each key once", "invalid JSON", str(exc))]
    return []


def read_contract(data: bytes) -> tuple[Contract | None, list[Violation]]:
    problems = _strict_json(data, "contract", "contract.json")
    if problems:
        return None, problems
    try:
        return Contract.from_json(data), []
    except ValidationError as exc:
        if exc.errors() and exc.errors()[0]["type"] == "json_invalid":
            return None, [Violation("contract", "a JSON object", "invalid JSON", str(exc.errors()[0]["msg"]))]
        return None, pydantic_violations("contract", exc)


def read_architecture(data: bytes, registry: ArchitectureRegistry, *, allow_code_mismatch: bool = False,
                      ) -> tuple[ArchitectureRef | None, Architecture | None, list[Violation]]:
    """The package's architecture reference, and the installed architecture it names."""
    problems = _strict_json(data, "architecture", "architecture.json")
    if problems:
        return None, None, problems
    try:
        ref = ArchitectureRef.model_validate_json(data)
    except ValidationError as exc:
        return None, None, pydantic_violations("architecture", exc)
    try:
        arch = registry.get(ref.name, ref.version)
    except NotFoundError as exc:
        return ref, None, [Violation("architecture.name", ref.label, "not installed", str(exc))]
    if arch.code_digest != ref.code_digest and not allow_code_mismatch:
        return ref, None, [Violation(
            "architecture.code_digest", ref.code_digest, arch.code_digest,
            f"the installed {arch.label} code differs from the code these weights were packaged with: install "
            "that code, or accept the difference with allow_code_mismatch=True (--allow-code-mismatch)",
        )]
    return ref, arch, []


def read_header(weights: Weights) -> tuple[Header | None, list[Violation]]:
    """The weights' headers (every file's, as one), checked from the files' first bytes."""
    try:
        return weights.header(), []
    except ContractViolationError as exc:
        return None, [Violation("weights", "a well-formed safetensors file", "malformed", str(exc))]


def build_module(arch: Architecture, ref: ArchitectureRef, header: Header, weights: Weights,
                 ) -> tuple[nn.Module | None, list[Violation]]:
    """Build the architecture from its config and load the weights strictly, in eval mode.

    The module is first built on torch's meta device, which allocates nothing, and
    compared with the weights' header: a config asking for terabytes of parameters is
    refused by that comparison instead of by the machine running out of memory. Each
    weights file is then read straight into the tensors of that same module, so
    loading needs the weights' size in memory, not twice that. Raises
    ``CorruptBlobError`` when a file does not match its digest.
    """
    import torch

    def bad_config(exc: Exception) -> list[Violation]:
        return [Violation("architecture.config", f"a valid config for {arch.label}", preview(ref.config, 200),
                          str(exc))]

    try:
        with torch.device("meta"):
            module = arch.build(ref.config)
    except InvalidInputError as exc:
        return None, bad_config(exc)
    problems = compare_state(state_of_module(module), state_of_header(header), arch.label)
    if problems:
        return None, problems
    for tensors in weights.load():
        module.load_state_dict(tensors, strict=False, assign=True)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        # Tensors outside the state dict (non-persistent buffers) need a real build.
        built = arch.build(ref.config)
        built.load_state_dict(module.state_dict(), strict=True, assign=True)
        module = built
    module.eval()
    return module, []
