"""Velocity metrics: how fast and how safely models reach production, from lineage, runs and refs.

- **Experiments to production**: model packages made (every training run and every
  packaged trial is an experiment) against those that ever served in the environment
  (a target in the history of ``model/<name>/<env>``, or a rollout that sent it traffic).
- **Cycle time**: per model that reached production, from its code's commit (the git
  commit time when the repository knows it, else when the code state was recorded) to
  its first production inference (its first row in the model's inference log, else the
  first time it received production traffic: the ref move, or the first canary step of a rollout).
  Reported as p50 and p95.
- **Promotion friction**: the share of candidates whose first gate run failed (``factory.gates``).
- **Gate false-negative rate**: of the rollouts in the environment of models that passed
  their gates, the share rolled back automatically.

Everything is read from the store; nothing here is kept elsewhere.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["Velocity", "velocity", "to_prometheus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Velocity:
    env: str
    experiments: int
    in_production: int
    cycle_times_s: tuple[float, ...]
    friction_candidates: int
    friction_failed_first: int
    gated_rollouts: int
    rolled_back_after_gates: int
    per_model: Mapping[str, float] = field(default_factory=dict)  # digest -> cycle time (s)

    @property
    def experiments_per_production(self) -> float | None:
        """Experiments made per model that reached production (None before the first)."""
        return self.experiments / self.in_production if self.in_production else None

    @property
    def cycle_p50_s(self) -> float | None:
        return _quantile(self.cycle_times_s, 0.50)

    @property
    def cycle_p95_s(self) -> float | None:
        return _quantile(self.cycle_times_s, 0.95)

    @property
    def promotion_friction(self) -> float | None:
        return self.friction_failed_first / self.friction_candidates if self.friction_candidates else None

    @property
    def gate_false_negative_rate(self) -> float | None:
        return self.rolled_back_after_gates / self.gated_rollouts if self.gated_rollouts else None

    def to_json(self) -> dict[str, object]:
        return {
            "env": self.env, "experiments": self.experiments, "in_production": self.in_production,
            "experiments_per_production": self.experiments_per_production,
            "cycle_time_p50_s": self.cycle_p50_s, "cycle_time_p95_s": self.cycle_p95_s,
            "promotion_friction": self.promotion_friction,
            "friction_candidates": self.friction_candidates, "friction_failed_first": self.friction_failed_first,
            "gate_false_negative_rate": self.gate_false_negative_rate,
            "gated_rollouts": self.gated_rollouts, "rolled_back_after_gates": self.rolled_back_after_gates,
        }


def _quantile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return None
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _when(text: str | datetime) -> datetime:
    value = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=256)
def _commit_time(commit: str, root: str) -> datetime | None:
    """When ``commit`` was made, if the repository at ``root`` has it."""
    try:
        out = subprocess.run(["git", "-C", root, "show", "-s", "--format=%cI", commit], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return _when(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _code_time(store, model) -> datetime | None:
    """When the code behind ``model`` was committed (or recorded): its ``code`` ancestor."""
    for parent in model.parents:
        try:
            art = store.artifacts.get(parent)
        except Exception:  # a parent recorded elsewhere: skip it
            continue
        if art.kind == "code":
            commit = art.metadata.get("commit")
            root = art.metadata.get("root") or "."
            if commit:
                made = _commit_time(commit, root)
                if made is not None:
                    return min(made, _when(art.created_at))
            return _when(art.created_at)
        if art.kind in ("training-config", "run"):
            found = _code_time(store, art)
            if found is not None:
                return found
    return None


def _first_inference(store, model_name: str) -> dict[str, datetime]:
    """The first logged inference per version (12 hex digits) of ``model_name``."""
    from factory.store.features import FeatureLog

    try:
        table = FeatureLog(store, f"inference-{model_name}").read()
    except Exception:  # nothing logged yet
        return {}
    if table.num_rows == 0:
        return {}
    out: dict[str, datetime] = {}
    grouped = table.group_by("version").aggregate([("ts", "min")])
    for version, first in zip(grouped["version"].to_pylist(), grouped["ts_min"].to_pylist(), strict=True):
        out[version] = _when(first)
    return out


def velocity(store, *, env: str = "prod") -> Velocity:
    """The velocity metrics of every model in ``store`` for environment ``env``."""
    from factory.gates import promotion_friction

    models = store.artifacts.find(kind="model")
    served: dict[str, datetime] = {}  # digest -> first time it received production traffic
    for ref in store.refs.list("model/"):
        if not ref.name.endswith(f"/{env}"):
            continue
        for change in store.refs.history(ref.name):
            if change.new:
                _earliest(served, change.new, _when(change.at))
    rolled_back = gated = 0
    for run in store.runs.list(kind="rollout"):
        config = run.config
        if config.get("env") != env:
            continue
        events = run.events()
        candidate = config.get("candidate")
        live = [e for e in events if (e.details.get("weight") or 0) > 0]  # the candidate answered real requests
        if candidate and live:
            _earliest(served, candidate, _when(live[0].at))
        if candidate and _passed_gates(store, candidate):
            ended = [e for e in events if e.details.get("event") in ("promoted", "rolled-back")]
            if ended:
                gated += 1
                rolled_back += int(ended[-1].details.get("event") == "rolled-back" and
                                   bool(ended[-1].details.get("automatic")))
    first_rows: dict[str, dict[str, datetime]] = {}
    per_model: dict[str, float] = {}
    by_digest = {m.digest: m for m in models}
    for digest, first_served in served.items():
        model = by_digest.get(digest)
        if model is None:
            continue
        name = model.name or ""
        if name not in first_rows:
            first_rows[name] = _first_inference(store, name)
        first = first_rows[name].get(digest.removeprefix("sha256:")[:12], first_served)
        start = _code_time(store, model)
        if start is not None:
            per_model[digest] = max(0.0, (first - start).total_seconds())
    friction = promotion_friction(store)
    return Velocity(env=env, experiments=len(models), in_production=len([d for d in served if d in by_digest]),
                    cycle_times_s=tuple(per_model.values()), friction_candidates=friction.candidates,
                    friction_failed_first=friction.failed_first, gated_rollouts=gated,
                    rolled_back_after_gates=rolled_back, per_model=per_model)


def _earliest(found: dict[str, datetime], digest: str, when: datetime) -> None:
    if digest not in found or when < found[digest]:
        found[digest] = when


def _passed_gates(store, digest: str) -> bool:
    """Whether ``digest``'s latest gate run passed."""
    runs = [r for r in store.runs.list(kind="gate") if r.config.get("subject") == digest and
            r.state == "succeeded"]
    if not runs:
        return False
    finished = [e for e in runs[-1].events() if e.state == "succeeded"]
    return bool(finished) and finished[-1].details.get("verdict") == "pass"


def to_prometheus(v: Velocity) -> str:
    """The metrics in Prometheus text exposition format (0.0.4)."""
    lines: list[str] = []

    def metric(name: str, help_text: str, value: float | None, kind: str = "gauge", **labels: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        if value is not None:
            label_text = ",".join(f'{k}="{val}"' for k, val in {"env": v.env, **labels}.items())
            lines.append(f"{name}{{{label_text}}} {float(value):.6g}")

    metric("factory_experiments_total", "Model packages made (training runs and packaged trials).", v.experiments,
           "counter")
    metric("factory_models_in_production_total", "Models that ever received production traffic.", v.in_production,
           "counter")
    metric("factory_experiments_per_production", "Experiments per model that reached production.",
           v.experiments_per_production)
    lines.append("# HELP factory_cycle_time_seconds Commit to first production inference, per model.")
    lines.append("# TYPE factory_cycle_time_seconds summary")
    for q, value in (("0.5", v.cycle_p50_s), ("0.95", v.cycle_p95_s)):
        if value is not None:
            lines.append(f'factory_cycle_time_seconds{{env="{v.env}",quantile="{q}"}} {value:.6g}')
    lines.append(f'factory_cycle_time_seconds_sum{{env="{v.env}"}} {sum(v.cycle_times_s):.6g}')
    lines.append(f'factory_cycle_time_seconds_count{{env="{v.env}"}} {len(v.cycle_times_s)}')
    metric("factory_promotion_friction", "Share of candidates whose first gate run failed.", v.promotion_friction)
    metric("factory_gate_false_negative_rate",
           "Share of rollouts of gate-passing models that were rolled back automatically.",
           v.gate_false_negative_rate)
    return "\n".join(lines) + "\n"
