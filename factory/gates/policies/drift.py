"""``drift``: population stability index and two-sample KS, per feature, reference against current.

Both sides are dataset versions, so the current side can be anything the store holds
as one: a fresh extract, or the serving feature log written out as a dataset. PSI uses
bins at the reference's deciles (``bins``), with empty bins floored at 1e-6 so the
logarithm stays finite. The KS p-values are compared with ``ks_alpha`` divided by the
number of features (Bonferroni), so testing more features does not raise the false
alarm rate. A feature FAILS when PSI >= ``psi_threshold`` or its p-value is below
the corrected alpha.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from pydantic import Field

from factory.errors import InvalidInputError
from factory.gates.policies._base import ConfiguredPolicy, PolicyConfig
from factory.gates.policy import PolicyContext, PolicyResult

if TYPE_CHECKING:
    import numpy as np

    from factory.contract import PackageView

__all__ = ["DriftPolicy", "psi"]

_FLOOR = 1e-6


class DriftConfig(PolicyConfig):
    reference: str = Field(min_length=1, description="the dataset version the model was trained on")
    current: str = Field(min_length=1, description="the dataset version to compare (e.g. serving traffic)")
    features: tuple[str, ...] | None = Field(
        None, description="default: the contract's drift_features, else every numeric column both sides share")
    psi_threshold: float = Field(0.25, gt=0)
    ks_alpha: float = Field(0.05, gt=0, lt=1)
    bins: int = Field(10, ge=2, le=1000)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """The population stability index of ``current`` against ``reference``, over reference quantile bins."""
    import numpy as np

    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref, cur = np.maximum(ref, _FLOOR), np.maximum(cur, _FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _numeric(schema: tuple[tuple[str, str], ...]) -> list[str]:
    return [c for c, t in schema if t.startswith(("int", "uint", "float", "double", "halffloat"))]


class DriftPolicy(ConfiguredPolicy):
    """PASS when no feature has drifted by PSI or by the corrected KS test."""

    id = "drift"
    version = "1.0"
    Config = DriftConfig
    remediation = ("the current data differs from what the model was trained on: check the feature pipeline "
                   "for skew between training and serving, and retrain on recent data if the shift is real")

    def _features(self, package: PackageView, ref_schema, cur_schema) -> list[str]:
        if self.config.features is not None:
            return list(self.config.features)
        if package.contract.observability.drift_features:
            return list(package.contract.observability.drift_features)
        shared = [c for c in _numeric(ref_schema) if c in set(_numeric(cur_schema))]
        if not shared:
            raise InvalidInputError("the two dataset versions share no numeric column: name the features to compare")
        return shared

    def evaluate(self, package: PackageView, context: PolicyContext) -> PolicyResult:
        import numpy as np
        from scipy.stats import ks_2samp

        cfg = self.config
        reference = context.store.datasets.get(cfg.reference)
        current = context.store.datasets.get(cfg.current)
        key = set(reference.key)
        features = [f for f in self._features(package, reference.schema, current.schema) if f not in key]
        ref_table = context.store.datasets.read(reference, columns=features)
        cur_table = context.store.datasets.read(current, columns=features)
        if ref_table.num_rows == 0 or cur_table.num_rows == 0:
            raise InvalidInputError(f"drift needs rows on both sides: {reference.ref} has {ref_table.num_rows}, "
                                    f"{current.ref} has {cur_table.num_rows}")
        alpha = cfg.ks_alpha / len(features)
        figures: dict[str, Any] = {"features": len(features), "ks_alpha_corrected": alpha,
                                   "reference_rows": ref_table.num_rows, "current_rows": cur_table.num_rows}
        failures, per_feature = [], {}
        for name in features:
            ref = ref_table.column(name).to_numpy(zero_copy_only=False).astype(float)
            cur = cur_table.column(name).to_numpy(zero_copy_only=False).astype(float)
            ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
            value = psi(ref, cur, cfg.bins)
            with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp" is not news
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(ks_2samp(ref, cur).pvalue)
            per_feature[name] = {"psi": value, "ks_p": p}
            figures[f"psi.{name}"] = round(value, 6)
            figures[f"ks_p.{name}"] = p
            if value >= cfg.psi_threshold:
                failures.append(f"{name}: PSI {value:.3f} >= {cfg.psi_threshold:g}")
            if p < alpha:
                failures.append(f"{name}: KS p {p:.3g} < {alpha:.3g} (alpha {cfg.ks_alpha:g} / {len(features)})")
        evidence = {"reference": reference.digest, "current": current.digest,
                    "statistics": context.evidence(per_feature)}
        return self.judge(failures, figures=figures, evidence=evidence,
                          passed=f"no drift in {len(features)} feature(s) of {current.ref} against {reference.ref}")
