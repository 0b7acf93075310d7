"""``security``: weights are safetensors with valid headers; an imported folder holds no pickles.

A package the store refuses as unsafe never reaches ``evaluate``: the gate fails every
policy with the store's reason (``factory.gates.evaluation``). For the package itself,
every weights file must be safetensors whose header passes factory's checks. A folder
imported from outside (``directory``) is scanned without loading anything: each file's
name and first bytes are checked for pickles, torch zip checkpoints and their usual
suffixes (any such file FAILS, whatever it contains), and modelscan reports unsafe
operators inside any pickle-like file it recognises.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from factory.errors import ContractViolationError, InvalidInputError, UnsafePackageError
from factory.gates.policies._base import ConfiguredPolicy, PolicyConfig
from factory.gates.policy import PolicyContext, PolicyResult

if TYPE_CHECKING:
    from factory.contract import PackageView

__all__ = ["SecurityPolicy", "scan_directory"]

_SNIFF_BYTES = 64


class SecurityConfig(PolicyConfig):
    directory: str | None = Field(None, description="a folder imported from outside, scanned without loading")


def _sniff_file(path: Path) -> str | None:
    """Why the file may run code when loaded, judged from its name and first bytes only."""
    from factory.contract import _files

    if path.name.lower().endswith(_files.UNSAFE_SUFFIXES):
        return f"{path.name} has a suffix of a format that can run code when loaded"
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    try:
        _files._sniff(path.name, head, "the imported folder")
    except UnsafePackageError as exc:
        return str(exc).split(": refused", 1)[0]
    return None


def scan_directory(directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, Any]]:
    """Problems found in a folder (never loading a file), and modelscan's report."""
    from modelscan.modelscan import ModelScan

    root = Path(directory)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder: give the folder the model was imported from")
    problems = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            problems.append(f"{path.relative_to(root)} is a symbolic link: copy the file in instead")
        elif path.is_file():
            found = _sniff_file(path)
            if found:
                problems.append(found)
    report = ModelScan().scan(str(root))
    for issue in report.get("issues", []):
        problems.append(f"modelscan: {issue.get('severity')} {issue.get('description')} in {issue.get('source')}")
    for error in report.get("errors", []):
        problems.append(f"modelscan could not scan {error.get('source', '?')}: {error.get('description', error)}")
    return problems, report


class SecurityPolicy(ConfiguredPolicy):
    """PASS when the weights are valid safetensors and the imported folder (if any) is clean."""

    id = "security"
    version = "1.0"
    Config = SecurityConfig
    remediation = ("store the weights as safetensors only (factory.contract.package writes them), remove "
                   "pickles and other files that run code when loaded from what was imported, and package again")

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult:
        failures: list[str] = []
        figures: dict[str, Any] = {"weight_files": len(package.weight_files)}
        if not package.weight_files:
            failures.append("the package holds no safetensors weights")
        tensors = 0
        for name in package.weight_files:
            try:
                tensors += len(package.weights_header(name).tensors)
            except (ContractViolationError, UnsafePackageError) as exc:
                failures.append(str(exc))
        figures["tensors"] = tensors
        evidence = {"manifest": package.digest}
        if self.config.directory:
            problems, report = scan_directory(self.config.directory)
            failures += problems
            summary = report.get("summary", {})
            figures["scanned_files"] = summary.get("scanned", {}).get("total_scanned", 0)
            figures["scan_issues"] = summary.get("total_issues", 0)
            evidence["scan"] = context.evidence(report)
        return self.judge(failures, figures=figures, evidence=evidence,
                          passed="safetensors weights with valid headers"
                          + ("; the imported folder holds nothing that runs code" if self.config.directory else ""))
