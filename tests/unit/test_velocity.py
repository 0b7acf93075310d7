"""Velocity metrics from a real history: packages, gate runs, rollouts (promoted and rolled back), refs and logs."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from factory_kit import MODEL, history, log_requests
from rollout_kit import Behaviour, Clock, World

from factory.runtime._velocity import _quantile, to_prometheus, velocity
from factory.serve import Rollout, RolloutConfig, RolloutSpec

CONFIG = RolloutConfig(steps=(50.0, 100.0), window_s=5, min_requests=40, min_compared=40)


def _roll(store, candidate, incumbent, clock, behaviours) -> Rollout:
    world = World(clock, behaviours, rps=100)
    spec = RolloutSpec(model=MODEL, env="prod", candidate=candidate, incumbent=incumbent, p99_bound_ms=100.0,
                       config=CONFIG)
    rollout = Rollout.begin(store, spec, traffic=world.traffic, signals=world.signals, clock=clock)
    world.run(rollout, 120)
    return rollout


@pytest.fixture(scope="module")
def factory_history(tmp_path_factory):
    """Three packages: the first in prod, the second promoted by a rollout, the third rolled back automatically."""
    h = history(tmp_path_factory.mktemp("velocity"), models=3)
    first, good, bad = h.models
    v = lambda d: d[7:19]  # noqa: E731
    clock = Clock(datetime.now(UTC).timestamp())
    promoted = _roll(h.store, good, first, clock, {v(first): Behaviour(), v(good): Behaviour(agreement=0.99)})
    assert promoted.state.outcome == "promoted"
    rolled = _roll(h.store, bad, good, clock, {v(good): Behaviour(), v(bad): Behaviour(agreement=0.5)})
    assert rolled.state.outcome == "rolled-back"
    log_requests(h.store, first, ["a", "b"], at=datetime.now(UTC) + timedelta(seconds=30))
    return h


def test_counts_ratio_friction_and_false_negatives(factory_history):
    """3 experiments, 2 reached prod (1.5 per production model), no failed first gate, 1 of 2 rollouts rolled back."""
    v = velocity(factory_history.store)
    assert (v.experiments, v.in_production) == (3, 2)
    assert v.experiments_per_production == 1.5
    assert (v.friction_candidates, v.friction_failed_first, v.promotion_friction) == (3, 0, 0.0)
    assert (v.gated_rollouts, v.rolled_back_after_gates) == (2, 1)
    assert v.gate_false_negative_rate == 0.5


def test_cycle_time_runs_from_the_code_to_the_first_production_inference(factory_history):
    """Each production model has a cycle time; the first one's ends at its first logged inference, not its ref move."""
    store = factory_history.store
    v = velocity(store)
    first = factory_history.models[0]
    assert set(v.per_model) == set(factory_history.models[:2])
    code = store.artifacts.get(factory_history.code)
    logged = datetime.now(UTC) + timedelta(seconds=25)
    assert v.per_model[first] >= (logged - code.created_at).total_seconds() - 60
    assert v.cycle_p50_s is not None and v.cycle_p50_s <= v.cycle_p95_s


def test_prometheus_text_names_every_metric(factory_history):
    """The export parses as Prometheus text: one sample per metric, the summary with its quantiles."""
    text = to_prometheus(velocity(factory_history.store))
    for name in ("factory_experiments_total", "factory_experiments_per_production", "factory_promotion_friction",
                 "factory_gate_false_negative_rate", 'factory_cycle_time_seconds{env="prod",quantile="0.95"}'):
        assert name in text
    assert 'factory_gate_false_negative_rate{env="prod"} 0.5' in text
    assert text.endswith("\n")


def test_the_cli_prints_a_table_and_writes_a_textfile(factory_history, tmp_path):
    """`factory metrics` shows the table; --out writes a file a textfile collector can read."""
    home = ["--home", factory_history.store.home]
    base = [sys.executable, "-m", "factory.runtime._entry", "metrics"]
    shown = subprocess.run([*base, *home], capture_output=True, text=True, timeout=120, env=_env())
    assert shown.returncode == 0 and "gate false-negative rate" in shown.stdout and "50% (1 of 2)" in shown.stdout
    out = tmp_path / "factory.prom"
    assert subprocess.run([*base, "--out", str(out), *home], capture_output=True, timeout=120,
                          env=_env()).returncode == 0
    assert "factory_experiments_total" in out.read_text()


def test_quantiles_interpolate_like_numpy():
    """p50 and p95 follow numpy's default (linear) so figures match a notebook's."""
    import numpy as np

    values = [3.0, 1.0, 7.0, 20.0, 4.0]
    for q in (0.5, 0.95):
        assert _quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
    assert _quantile([], 0.5) is None


def _env():
    import os

    return {**os.environ, "COLUMNS": "200"}
