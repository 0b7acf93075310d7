"""The rollout's own metrics in Prometheus format: where it stands and what it decided.

Exported by the process that hosts rollouts (the controller), through its own
``CollectorRegistry`` so tests and several hosts in one process never collide:

- ``factory_rollout_step{model,env}``: the stage under way (0 is the shadow stage when
  there is one), -1 once the rollout ended;
- ``factory_rollout_weight_percent{model,env,version}``: each version's share of traffic;
- ``factory_rollout_shadow_agreement{model,env,version,output}`` and
  ``factory_rollout_shadow_mean_abs_diff{...}``: the latest window's shadow comparison;
- ``factory_rollout_analyses_total{model,env,verdict}``: analyses by verdict
  (pass, fail, wait), and ``factory_rollout_outcomes_total{model,env,outcome}``: ended
  rollouts (promoted, rolled-back, cancelled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from factory.serve._analysis import Analysis
    from factory.serve._router import TrafficConfig

__all__ = ["RolloutMetrics"]


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.step = Gauge("factory_rollout_step", "The rollout's stage under way (0 = shadow when there is one); "
                          "-1 once it ended.", ("model", "env"), registry=r)
        self.weight = Gauge("factory_rollout_weight_percent", "Each version's share of unversioned traffic, "
                            "in percent.", ("model", "env", "version"), registry=r)
        self.agreement = Gauge("factory_rollout_shadow_agreement", "Share of rows on which the candidate's shadow "
                               "reply agreed with the incumbent's, per label output, over the latest window.",
                               ("model", "env", "version", "output"), registry=r)
        self.abs_diff = Gauge("factory_rollout_shadow_mean_abs_diff", "Mean absolute difference between the "
                              "candidate's shadow reply and the incumbent's, per numeric output, over the latest "
                              "window.", ("model", "env", "version", "output"), registry=r)
        self.analyses = Counter("factory_rollout_analyses", "Rollout analyses by verdict.",
                                ("model", "env", "verdict"), registry=r)
        self.outcomes = Counter("factory_rollout_outcomes", "Ended rollouts by outcome.",
                                ("model", "env", "outcome"), registry=r)

    def stage(self, model: str, env: str, stage: int) -> None:
        self.step.labels(model, env).set(stage)

    def traffic(self, env: str, config: TrafficConfig) -> None:
        for version, weight in config.weights.items():
            self.weight.labels(config.model, env, version).set(weight)

    def analysis(self, model: str, env: str, version: str, analysis: Analysis) -> None:
        self.analyses.labels(model, env, str(analysis.verdict)).inc()
        for output, value in analysis.candidate.agreement.items():
            self.agreement.labels(model, env, version, output).set(value)
        for output, value in analysis.candidate.mean_abs_diff.items():
            self.abs_diff.labels(model, env, version, output).set(value)

    def ended(self, model: str, env: str, outcome: str) -> None:
        self.outcomes.labels(model, env, outcome).inc()
        self.step.labels(model, env).set(-1)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
