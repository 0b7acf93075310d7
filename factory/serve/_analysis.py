"""One stage's analysis: the candidate's figures against the incumbent's and the thresholds.

``analyse`` is pure: figures and config in, a verdict and its checks out. ``fail`` as
soon as any check fails on ``min_requests`` or more (a broken candidate is rolled back
before its window ends); ``pass`` only on a complete window with every required check
passed; ``wait`` otherwise. Each check records its value and limit, so an analysis
written as evidence says exactly why it decided.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factory.serve._rollout_config import RolloutConfig
    from factory.serve._signals import VersionFigures

__all__ = ["Verdict", "Check", "Analysis", "analyse", "error_budget"]


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True)
class Check:
    """One check: ``outcome`` is pass, fail, skip (not judged, and not needed) or wait (needed, not yet judgeable)."""

    name: str
    outcome: str
    value: float | None = None
    limit: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "value": self.value, "limit": self.limit,
                "note": self.note}


@dataclass(frozen=True)
class Analysis:
    """A verdict, the checks behind it and the window's figures."""

    verdict: Verdict
    checks: tuple[Check, ...]
    candidate: VersionFigures
    incumbent: VersionFigures
    start: float
    end: float
    complete: bool

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.outcome == "fail")

    def summary(self) -> str:
        """One line: the failed checks, else the verdict."""
        if self.failed:
            return "; ".join(c.note for c in self.failed)
        waiting = [c.note for c in self.checks if c.outcome == "wait"]
        return "; ".join(waiting) if waiting else str(self.verdict)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "start": self.start, "end": self.end, "complete": self.complete,
                "summary": self.summary(), "checks": [c.to_json() for c in self.checks],
                "candidate": self.candidate.to_json(), "incumbent": self.incumbent.to_json()}


def error_budget(incumbent_rate: float | None, config: RolloutConfig) -> float:
    """The highest error rate the candidate may show: a multiple of the incumbent's, never under the floor."""
    return max(config.max_error_ratio * (incumbent_rate or 0.0), config.error_rate_floor)


def _significant(errors: float, requests: float, rate: float, confidence: float) -> bool:
    """Whether ``errors`` of ``requests`` is too many to come from a true error rate of ``rate``."""
    from scipy.stats import binom

    k, n = round(errors), round(requests)
    if rate <= 0:
        return k > 0
    return bool(binom.sf(k - 1, n, min(rate, 1.0)) < 1 - confidence)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _error_check(cand: VersionFigures, inc: VersionFigures, config: RolloutConfig) -> Check:
    rate = cand.error_rate or 0.0
    budget = error_budget(inc.error_rate, config)
    failed = rate > budget and _significant(cand.errors, cand.requests, budget, config.error_confidence)
    note = (f"error rate {_pct(rate)} over {cand.requests:.0f} requests against a budget of {_pct(budget)} "
            f"({config.max_error_ratio:g}x the incumbent's {_pct(inc.error_rate)}, floor {_pct(config.error_rate_floor)})")
    return Check("error-rate", "fail" if failed else "pass", rate, budget, note)


def _latency_check(cand: VersionFigures, bound_ms: float) -> Check:
    if cand.p99_ms is None:
        return Check("p99-latency", "wait", None, bound_ms, "no latency measured yet")
    failed = cand.p99_ms > bound_ms
    return Check("p99-latency", "fail" if failed else "pass", cand.p99_ms, bound_ms,
                 f"p99 latency {cand.p99_ms:.1f} ms {'above' if failed else 'within'} the bound of {bound_ms:g} ms")


def _divergence_checks(cand: VersionFigures, config: RolloutConfig, required: bool) -> list[Check]:
    if cand.compared < config.min_compared:
        note = f"{cand.compared:.0f} of {config.min_compared} shadow comparisons"
        return [Check("divergence", "wait" if required else "skip", cand.compared, config.min_compared, note)]
    checks = []
    for output, agreement in sorted(cand.agreement.items()):
        disagreement = 1.0 - agreement
        failed = disagreement > config.max_disagreement
        checks.append(Check(f"divergence:{output}", "fail" if failed else "pass", disagreement,
                            config.max_disagreement, f"{output}: {_pct(disagreement)} of rows disagree with the "
                            f"incumbent (at most {_pct(config.max_disagreement)})"))
    for output, diff in sorted(cand.mean_abs_diff.items()):
        limit = config.max_mean_abs_diff
        failed = limit is not None and diff > limit
        checks.append(Check(f"divergence:{output}", "fail" if failed else "pass", diff, limit,
                            f"{output}: mean absolute difference {diff:.4g} from the incumbent"
                            + ("" if limit is None else f" (at most {limit:g})")))
    return checks


def _business_checks(cand: VersionFigures, inc: VersionFigures, config: RolloutConfig) -> list[Check]:
    checks = []
    n = config.min_outcomes
    if min(cand.label_outcomes, inc.label_outcomes) >= n and cand.accuracy is not None and inc.accuracy is not None:
        drop = inc.accuracy - cand.accuracy
        failed = drop > config.max_accuracy_drop
        checks.append(Check("business:accuracy", "fail" if failed else "pass", cand.accuracy,
                            inc.accuracy - config.max_accuracy_drop,
                            f"reported accuracy {_pct(cand.accuracy)} against the incumbent's {_pct(inc.accuracy)} "
                            f"(may trail by {_pct(config.max_accuracy_drop)})"))
    if (min(cand.value_outcomes, inc.value_outcomes) >= n and cand.mean_abs_error is not None
            and inc.mean_abs_error is not None):
        limit = inc.mean_abs_error * (1 + config.max_error_increase)
        failed = cand.mean_abs_error > limit
        checks.append(Check("business:mean-abs-error", "fail" if failed else "pass", cand.mean_abs_error, limit,
                            f"reported mean absolute error {cand.mean_abs_error:.4g} against the incumbent's "
                            f"{inc.mean_abs_error:.4g} (at most {limit:.4g})"))
    return checks


def analyse(candidate: VersionFigures, incumbent: VersionFigures, *, config: RolloutConfig, bound_ms: float,
            shadow: bool, complete: bool, start: float = 0.0, end: float = 0.0) -> Analysis:
    """Judge one stage: ``complete`` when its window is over; ``shadow`` when divergence is required."""
    if candidate.requests < config.min_requests:
        checks: tuple[Check, ...] = (Check("requests", "wait", candidate.requests, config.min_requests,
                                           f"{candidate.requests:.0f} of {config.min_requests} requests so far"),)
        return Analysis(Verdict.WAIT, checks, candidate, incumbent, start, end, complete)
    checks = (Check("requests", "pass", candidate.requests, config.min_requests, ""),
              _error_check(candidate, incumbent, config), _latency_check(candidate, bound_ms),
              *_divergence_checks(candidate, config, shadow), *_business_checks(candidate, incumbent, config))
    if any(c.outcome == "fail" for c in checks):
        verdict = Verdict.FAIL
    elif complete and not any(c.outcome == "wait" for c in checks):
        verdict = Verdict.PASS
    else:
        verdict = Verdict.WAIT
    return Analysis(verdict, checks, candidate, incumbent, start, end, complete)
