"""``contract``: the package satisfies its own contract (``factory.contract.validate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from factory.contract.validation import PREDICATE_TYPE
from factory.gates.policies._base import ConfiguredPolicy, PolicyConfig
from factory.gates.policy import PolicyContext, PolicyResult

if TYPE_CHECKING:
    from factory.contract import PackageView

__all__ = ["ContractPolicy"]


class ContractConfig(PolicyConfig):
    runs: int = Field(50, ge=3, le=10_000, description="timed forward passes per batch size")
    budget_s: float = Field(2.0, gt=0, description="time budget for the latency measurement")


class ContractPolicy(ConfiguredPolicy):
    """PASS when the validation harness finds no violation; the full result is the evidence."""

    id = "contract"
    version = "1.0"
    predicate_type = PREDICATE_TYPE
    remediation = ("run 'factory contract validate DIGEST' to see each violation; fix the model or its contract "
                   "(inputs, outputs, latency bound), package it again and rerun the gate")
    Config = ContractConfig

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult:
        from factory.contract import validate

        result = validate(package.digest, store=context.store, runs=self.config.runs, budget_s=self.config.budget_s)
        figures: dict = {"checks": len(result.checks), "violations": len(result.violations)}
        for stat in result.latency:
            figures[f"p99_ms.batch_{stat.batch_size}"] = round(stat.p99_ms, 4)
        if result.p99_bound_ms is not None:
            figures["p99_bound_ms"] = result.p99_bound_ms
        evidence = {"validation": context.evidence(result.to_json())}
        return self.judge([str(v) for v in result.violations], figures=figures, evidence=evidence,
                          passed=f"{len(result.checks)} checks passed")
