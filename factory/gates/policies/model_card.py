"""``model-card``: the card's front matter parses, required sections are there and not empty,
and required metrics are reported, as numbers, in both the card and ``metrics.json``."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from pydantic import Field

from factory.errors import ContractViolationError
from factory.gates.policies._base import ConfiguredPolicy, PolicyConfig
from factory.gates.policy import PolicyContext, PolicyResult

if TYPE_CHECKING:
    from factory.contract import PackageView

__all__ = ["ModelCardPolicy"]

DEFAULT_SECTIONS = ("Inputs", "Outputs", "Serving", "Metrics", "Provenance")


class ModelCardConfig(PolicyConfig):
    required_sections: tuple[str, ...] = DEFAULT_SECTIONS
    required_metrics: tuple[str, ...] = ()


def _sections(card: str) -> dict[str, str]:
    """``## heading`` -> the text under it, up to the next heading of level 1 or 2."""
    out: dict[str, str] = {}
    parts = re.split(r"^(#{1,2}) +(.+?) *$", card, flags=re.MULTILINE)
    for i in range(1, len(parts) - 2, 3):
        if parts[i] == "##":
            out[parts[i + 1]] = parts[i + 2].strip()
    return out


def _card_metrics(front: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in front.get("model-index") or []:
        for result in (model or {}).get("results") or []:
            for metric in (result or {}).get("metrics") or []:
                if isinstance(metric, dict) and "type" in metric:
                    found[str(metric["type"])] = metric.get("value")
    return found


class ModelCardPolicy(ConfiguredPolicy):
    """PASS when the card parses and holds every required section and metric."""

    id = "model-card"
    version = "1.0"
    Config = ModelCardConfig
    remediation = ("complete the model card: add the missing sections and report the required metrics in its "
                   "model-index and in metrics.json, then package again")

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult:
        failures: list[str] = []
        try:
            front = package.card_metadata()
        except ContractViolationError as exc:
            return self.judge([str(exc)], passed="")
        sections = _sections(package.card)
        for name in self.config.required_sections:
            if name not in sections:
                failures.append(f"the card has no '## {name}' section")
            elif not sections[name]:
                failures.append(f"the card's '## {name}' section is empty")
        in_card = _card_metrics(front)
        for name in self.config.required_metrics:
            value = in_card.get(name)
            if value is None:
                failures.append(f"metric {name!r} is not in the card's model-index")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                failures.append(f"metric {name!r} in the card is {value!r}, not a finite number")
            if name not in package.metrics:
                failures.append(f"metric {name!r} is not in metrics.json")
        figures = {"sections": len(sections), "card_metrics": len(in_card)}
        return self.judge(failures, figures=figures, evidence={"card": package.files.get("README.md", "")},
                          passed=f"{len(self.config.required_sections)} section(s) and "
                                 f"{len(self.config.required_metrics)} metric(s) present")
