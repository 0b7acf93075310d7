"""What the built-in policies share: a validated configuration and result helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from factory.gates.policy import Figure, PolicyResult, Verdict

__all__ = ["PolicyConfig", "ConfiguredPolicy"]


class PolicyConfig(BaseModel):
    """Base of every built-in policy's configuration: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfiguredPolicy:
    """A policy built from keyword configuration, validated by its ``Config`` model."""

    id: ClassVar[str]
    version: ClassVar[str]
    Config: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, **config: Any):
        self.config = self.Config(**config)

    def result(self, verdict: Verdict, reason: str = "", *, figures: Mapping[str, Figure] | None = None,
               evidence: Mapping[str, str] | None = None) -> PolicyResult:
        return PolicyResult(self.id, self.version, verdict, reason, figures or {}, evidence or {})

    def judge(self, failures: list[str], *, passed: str, figures: Mapping[str, Figure] | None = None,
              evidence: Mapping[str, str] | None = None) -> PolicyResult:
        """FAIL naming every failure, else PASS with ``passed`` as the reason."""
        if failures:
            return self.result(Verdict.FAIL, "; ".join(failures), figures=figures, evidence=evidence)
        return self.result(Verdict.PASS, passed, figures=figures, evidence=evidence)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
