"""``fairness``: demographic parity and equalized odds over a sensitive column, with fairlearn.

Predictions come from running the package on the evaluation dataset version; the
sensitive column is read from the same rows (it need not be a model input). The
positive outcome is ``positive`` (1 by default) for both truth and prediction. A
comparison needs at least two groups, each of at least ``min_group_size`` rows, and
every group named in ``groups`` must be present: otherwise the policy FAILS and says
which group is short, rather than passing on numbers that mean nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field

from factory.gates.policies._base import ConfiguredPolicy
from factory.gates.policies._data import EvaluationData, predict_dataset
from factory.gates.policy import PolicyContext, PolicyResult

if TYPE_CHECKING:
    from factory.contract import PackageView

__all__ = ["FairnessPolicy"]


class FairnessConfig(EvaluationData):
    sensitive: str = Field(min_length=1, description="the column naming each row's group")
    positive: Any = Field(1, description="the favourable outcome, in labels and predictions alike")
    min_ratio: float = Field(0.8, ge=0.0, le=1.0, description="demographic parity ratio at least (four-fifths rule)")
    max_difference: float = Field(0.1, ge=0.0, le=1.0, description="demographic parity difference at most")
    max_equalized_odds: float = Field(0.1, ge=0.0, le=1.0, description="equalized odds difference at most")
    min_group_size: int = Field(30, ge=1, description="rows every group needs for its rates to mean anything")
    groups: tuple[Any, ...] | None = Field(None, description="groups that must all be present (none may be empty)")


class FairnessPolicy(ConfiguredPolicy):
    """PASS when parity ratio, parity difference and equalized odds difference are within bounds."""

    id = "fairness"
    version = "1.0"
    Config = FairnessConfig
    remediation = ("outcomes differ too much between groups of the sensitive column: check the training data "
                   "for under-represented groups and proxies of the sensitive column, mitigate (reweighting, "
                   "fairlearn's ExponentiatedGradient or ThresholdOptimizer), and make sure the evaluation set "
                   "holds enough rows of every group; then package and rerun the gate")

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult:
        import numpy as np
        from fairlearn.metrics import (
            demographic_parity_difference,
            demographic_parity_ratio,
            equalized_odds_difference,
        )

        cfg = self.config
        predictions = predict_dataset(package, context.store, cfg, extra_columns=[cfg.sensitive])
        table = predictions.table
        sensitive = np.asarray(table.column(cfg.sensitive).to_pylist(), dtype=object)
        y_true = (np.asarray(table.column(cfg.label).to_pylist(), dtype=object) == cfg.positive).astype(int)
        y_pred = (predictions.y_pred == cfg.positive).astype(int)
        values, counts = np.unique(sensitive.astype(str), return_counts=True)
        sizes = dict(zip(values.tolist(), counts.tolist(), strict=True))
        evidence = {"dataset": predictions.dataset.digest}
        figures: dict[str, Any] = {"rows": int(len(y_true)), "groups": len(sizes)}
        figures.update({f"size.{g}": n for g, n in sizes.items()})

        problems = [f"group {g!r} has no rows in {predictions.dataset.ref}"
                    for g in (cfg.groups or ()) if str(g) not in sizes]
        if len(sizes) < 2:
            problems.append(f"{cfg.sensitive!r} has {len(sizes)} group(s) ({', '.join(sizes) or 'none'}) in "
                            f"{predictions.dataset.ref}: fairness compares at least two; evaluate on a dataset "
                            "holding every group")
        problems += [f"group {g!r} has {n} rows, below the minimum of {cfg.min_group_size}"
                     for g, n in sizes.items() if n < cfg.min_group_size]
        if problems:
            return self.judge(problems, figures=figures, evidence=evidence, passed="")

        groups = sensitive.astype(str)
        for g in sizes:
            figures[f"selection_rate.{g}"] = round(float(y_pred[groups == g].mean()), 6)
        measured = {
            "demographic_parity_difference": demographic_parity_difference(y_true, y_pred, sensitive_features=groups),
            "demographic_parity_ratio": demographic_parity_ratio(y_true, y_pred, sensitive_features=groups),
            "equalized_odds_difference": equalized_odds_difference(y_true, y_pred, sensitive_features=groups),
        }
        figures.update({k: round(float(v), 6) for k, v in measured.items()})
        failures = [f"{k} cannot be computed ({v}): every group needs both outcomes in its labels"
                    for k, v in measured.items() if not math.isfinite(float(v))]
        if not failures:
            if measured["demographic_parity_ratio"] < cfg.min_ratio:
                failures.append(f"demographic parity ratio {measured['demographic_parity_ratio']:.3f} < "
                                f"{cfg.min_ratio:g}")
            if measured["demographic_parity_difference"] > cfg.max_difference:
                failures.append(f"demographic parity difference {measured['demographic_parity_difference']:.3f} > "
                                f"{cfg.max_difference:g}")
            if measured["equalized_odds_difference"] > cfg.max_equalized_odds:
                failures.append(f"equalized odds difference {measured['equalized_odds_difference']:.3f} > "
                                f"{cfg.max_equalized_odds:g}")
        evidence["measures"] = context.evidence({k: float(v) if math.isfinite(float(v)) else None
                                                 for k, v in measured.items()})
        return self.judge(failures, figures=figures, evidence=evidence,
                          passed=f"parity and equalized odds within bounds across {len(sizes)} groups")
