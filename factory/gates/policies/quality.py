"""``quality``: thresholds on metrics computed from the model's own predictions on a named dataset version.

The package's ``metrics.json`` are claims; this policy recomputes the metrics on the
evaluation set it is given and judges those. Classifiers (integer outputs) get
accuracy, balanced accuracy and macro precision, recall and F1; regressors get MAE,
RMSE and R².
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.errors import InvalidInputError
from factory.gates.policies._base import ConfiguredPolicy
from factory.gates.policies._data import EvaluationData, is_classifier, predict_dataset
from factory.gates.policy import PolicyContext, PolicyResult

if TYPE_CHECKING:
    from factory.contract import PackageView

__all__ = ["QualityPolicy", "Threshold", "CLASSIFICATION_METRICS", "REGRESSION_METRICS", "measure_quality"]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro")
REGRESSION_METRICS = ("mae", "rmse", "r2")


class Threshold(BaseModel):
    """Bounds on one metric: ``min`` (at least) and/or ``max`` (at most)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class QualityConfig(EvaluationData):
    thresholds: dict[str, Threshold] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_metrics(self) -> QualityConfig:
        unknown = sorted(set(self.thresholds) - set(CLASSIFICATION_METRICS) - set(REGRESSION_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}: choose among "
                             f"{list(CLASSIFICATION_METRICS) + list(REGRESSION_METRICS)}")
        return self


def compute_metrics(y_true, y_pred, classification: bool) -> dict[str, float]:
    import numpy as np
    from sklearn import metrics as m

    if classification:
        kw = {"average": "macro", "zero_division": 0}
        return {
            "accuracy": float(m.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(m.balanced_accuracy_score(y_true, y_pred)),
            "precision_macro": float(m.precision_score(y_true, y_pred, **kw)),
            "recall_macro": float(m.recall_score(y_true, y_pred, **kw)),
            "f1_macro": float(m.f1_score(y_true, y_pred, **kw)),
        }
    return {
        "mae": float(m.mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(m.mean_squared_error(y_true, y_pred))),
        "r2": float(m.r2_score(y_true, y_pred)),
    }


def measure_quality(store, model: str, dataset: str, *, label: str, features=None, output=None) -> dict[str, Any]:
    """The metrics the quality policy judges, of package ``model`` on dataset version ``dataset``, unjudged.

    Returns the metrics by name plus ``rows``, ``output`` (the output judged), ``task``
    (classification or regression) and ``dataset`` (the version's digest).
    """
    from factory.contract import open_package

    data = EvaluationData(dataset=dataset, label=label, features=tuple(features) if features else None, output=output)
    predictions, rows, classification, computed = _measure(open_package(store, model), store, data)
    if computed is None:
        raise InvalidInputError(f"dataset {predictions.dataset.ref} has no rows to evaluate {model} on: give a "
                                "dataset version with rows")
    return {"metrics": computed, "rows": rows, "output": predictions.output,
            "task": "classification" if classification else "regression", "dataset": predictions.dataset.digest}


def _measure(view: PackageView, store, data: EvaluationData):
    """``view``'s predictions on ``data``'s dataset, its row count, whether it classifies, and the metrics
    (None when the dataset has no rows): what the quality policy and ``measure_quality`` share."""
    predictions = predict_dataset(view, store, data)
    y_true = predictions.table.column(data.label).to_numpy(zero_copy_only=False)
    classification = is_classifier(view.contract, predictions.output)
    computed = compute_metrics(y_true, predictions.y_pred, classification) if len(y_true) else None
    return predictions, len(y_true), classification, computed


class QualityPolicy(ConfiguredPolicy):
    """PASS when every thresholded metric, computed on the evaluation set, is within its bounds."""

    id = "quality"
    version = "1.0"
    Config = QualityConfig
    remediation = ("the metrics computed on the evaluation dataset miss their thresholds: train longer or on "
                   "more or better data, tune the model, and check the evaluation set's labels and features "
                   "match what the model was trained on; then package and rerun the gate")

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult:
        cfg = self.config
        predictions, rows, classification, computed = _measure(package, context.store, cfg)
        if computed is None:
            return self.judge([f"dataset {predictions.dataset.ref} has no rows to evaluate on"], passed="")
        failures = []
        for name, bound in sorted(cfg.thresholds.items()):
            value = computed.get(name)
            if value is None:
                kind = "classifier" if classification else "regressor"
                failures.append(f"{name} is not computed for a {kind}: choose among {sorted(computed)}")
            elif not math.isfinite(value):
                failures.append(f"{name} is {value}")
            elif bound.min is not None and value < bound.min:
                failures.append(f"{name} {value:.4g} < {bound.min:g}")
            elif bound.max is not None and value > bound.max:
                failures.append(f"{name} {value:.4g} > {bound.max:g}")
        figures = {**{k: round(v, 6) for k, v in computed.items()}, "rows": rows}
        for name, claimed in package.metrics.items():
            if name in computed:
                figures[f"claimed.{name}"] = claimed
        evidence = {"dataset": predictions.dataset.digest, "metrics": context.evidence(computed)}
        return self.judge(failures, figures=figures, evidence=evidence,
                          passed=f"{len(cfg.thresholds)} metric(s) within bounds on {predictions.dataset.ref}")
