"""The demo's candidate cycles as pipelines, run by the store's controller actor.

``candidate_pipeline``: month-2 ingest -> features -> tune -> gates -> (rollout, evaluate beside it).
``faulty_pipeline``: features with inverted labels -> train -> gates; its rollout is a pipeline
of its own (``rollout_pipeline``, ``allow_rollback``), submitted once the candidate's rollout has
ended, since a model has one live rollout per environment. Each step is a Ray task (the
rollout a thread of the controller, which hosts it with Serve's traffic control and the
cluster's measured signals); ``follow`` shows each step's state as it changes, and the
rollout's events as the controller records them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from factory.runtime._demo_data import FEATURES, LABEL, SENSITIVE
from factory.runtime._demo_phases import CORRUPT, HOLDOUT, MODEL, VIEWS, Cycle, RolloutOutcome, book_until, \
    describe_event, store_book, training_config
from factory.runtime._step_types import PLACEHOLDER_DIGEST

__all__ = ["ingest_month", "candidate_pipeline", "faulty_pipeline", "rollout_pipeline", "follow", "Made",
           "P99_BOUND_MS"]

# The p99 a rollout holds a candidate to. Generous: the machine is shared, and a burst of other work
# stretches a 1 ms model's tail by orders of magnitude; the demo's faults are errors and divergence.
P99_BOUND_MS = 2500.0
_SMALL = {"cpus": 0.5}  # data steps: a Ray task each, next to two serving replicas and a training run


@dataclass(frozen=True)
class Made:
    """A model a pipeline made: its package digest (what the summary and the report show)."""

    model: str


def ingest_month(context, month: int, customers: int, applications: int, seed: int) -> dict[str, str]:
    """The ``ingest`` user step: the book up to ``month`` as new dataset versions, the views moved to them."""
    made = store_book(context.store, book_until(customers, applications, month=month, seed=seed))
    context.log_metrics({"applications": made["applications"].num_rows})
    context.details.update({f"dataset {k}": v.ref for k, v in made.items() if k != "views"})
    return {"applications": made["applications"].digest,
            **{name: view.digest for name, view in zip(VIEWS, made["views"], strict=True)}}


def _features(p, cycle: Cycle, inputs: dict[str, Any], *, name: str, corrupt: bool = False):
    config: dict[str, Any] = {"dataset": name, "timestamp": "ts", "key": ["application_id"], "holdout": HOLDOUT,
                              "holdout_dataset": "credit-evaluation"}
    if corrupt:
        config.update(transform=CORRUPT, transform_args={"above": cycle.options.corrupt_above})
    return p.step("features", "features", inputs=inputs, config=config, resources=_SMALL)


def _gates(p, cycle: Cycle, model, features, *, reference=None):
    """The prod gate set; the drift policy compares the holdout with ``reference`` (default: the training set)."""
    config = {"set": "prod", "label": LABEL, "features": list(FEATURES), "sensitive": SENSITIVE,
              "thresholds": {"accuracy": {"min": cycle.options.accuracy_min}}}
    holdout = features.output("holdout")
    return p.step("gates", "gates", inputs={"model": model, "dataset": holdout, "current": holdout,
                                            "reference": reference or features.output("dataset")}, config=config)


def _training(cycle: Cycle, **overrides: Any) -> dict[str, Any]:
    config = training_config(cycle, PLACEHOLDER_DIGEST, **overrides).model_dump(mode="json")
    config.pop("dataset")
    return config


def _rollout(p, cycle: Cycle, model, *, allow_rollback: bool, after=()):
    opts = cycle.options
    rollout = {"steps": list(opts.steps), "window_s": opts.window_s, "min_requests": opts.min_requests,
               "min_compared": opts.min_compared, "max_stage_s": max(opts.window_s * 20, 60.0),
               "canary_shadow_percent": 100.0, "p99_latency_ms": P99_BOUND_MS}
    return p.step("rollout", "rollout", inputs={"model": model}, after=after,
                  config={"env": "prod", "allow_rollback": allow_rollback, "rollout": rollout})


def candidate_pipeline(cycle: Cycle):
    """Month 2 arrives; a sweep's best trial is evaluated, gated and rolled out against prod."""
    from factory.runtime.pipeline import Pipeline

    opts = cycle.options
    p = Pipeline("credit-candidate", description="month 2 to a candidate in production")
    ingest = p.user("ingest", ingest_month, config={"month": 1, "customers": opts.customers,
                                                    "applications": opts.applications, "seed": opts.seed},
                    resources=_SMALL)
    features = _features(p, cycle, {"dataset": ingest.output("applications"),
                                    **{v: ingest.output(v) for v in VIEWS}}, name="credit-training")
    sweep = {"train": _training(cycle, hidden=(32,), workers=opts.sweep_workers), "num_samples": 1,
             "seed": opts.seed, "max_concurrent_trials": 2, "grace_period": opts.epochs,
             "space": {"hyperparameters.lr": {"grid": list(opts.learning_rates)}}}
    tune = p.step("tune", "tune", inputs={"dataset": features.output("dataset")}, config=sweep)
    gates = _gates(p, cycle, tune.output("model"), features)
    # The evaluation is a record, not a decision (the quality gate decides): it runs while the
    # rollout waits for its windows, not beside the gates, whose first run in a fresh worker it slowed.
    p.step("evaluate", "evaluate", inputs={"model": tune.output("model"), "dataset": features.output("holdout")},
           config={"label": LABEL, "features": list(FEATURES), "name": "credit-candidate"}, resources=_SMALL,
           after=[gates])
    _rollout(p, cycle, tune.output("model"), allow_rollback=False, after=[gates])
    return p


def faulty_pipeline(cycle: Cycle, ingested: dict[str, str], reference: str):
    """The same month with the labels of high-utilisation customers inverted, trained (``faulty_workers``), gated.

    ``reference`` is the good candidate's training set: what the drift policy holds the data to
    (the faulty labels are the fault the rollout is to catch live, not an input drift).
    """
    from factory.runtime.pipeline import Pipeline

    p = Pipeline("credit-faulty", description="a candidate trained on faulty labels")
    features = _features(p, cycle, {"dataset": ingested["applications"], **{v: ingested[v] for v in VIEWS}},
                         name="credit-training-faulty", corrupt=True)
    train = p.step("train", "train", inputs={"dataset": features.output("dataset")},
                   config=_training(cycle, hidden=(32,), workers=cycle.options.faulty_workers))
    _gates(p, cycle, train.output("model"), features, reference=reference)
    return p


def rollout_pipeline(cycle: Cycle, model: str, *, name: str):
    """One rollout step of ``model``; a rollback ends it as succeeded (the outcome the demo shows)."""
    from factory.runtime.pipeline import Pipeline

    p = Pipeline(name, description=f"roll {model[:19]} out in prod")
    _rollout(p, cycle, model, allow_rollback=True)
    return p


def _rollout_of(store, candidate: str, since: float):
    from factory.serve import rollouts

    mine = [r for r in rollouts(store, model=MODEL, env="prod") if r.config.get("candidate") == candidate
            and r.started_at.timestamp() >= since - 1]
    return mine[-1] if mine else None


def _step_line(step) -> str:
    line = f"step {step.name}: {step.state}"
    if step.duration_s is not None and step.state in ("succeeded", "failed"):
        line += f" in {step.duration_s:.1f} s"
    if step.state == "succeeded" and step.outputs:
        line += " (" + ", ".join(f"{k} {v[7:19]}" for k, v in sorted(step.outputs.items())) + ")"
    if step.error and step.state in ("failed", "retrying"):
        line += f": {step.error}"
    return line


def follow(cycle: Cycle, run_id: str, *, label: str, on_step=None, poll_s: float = 0.25, stop=None):
    """Show ``run_id``'s steps as their states change, and its rollout's events as they are recorded, until
    it ends; ``on_step(step)`` sees each step that succeeded. The rollout becomes one of ``cycle.rollouts``.
    ``stop`` (an event) ends the watch early with ``InterruptedError`` (the run goes on in the controller)."""
    from factory.runtime._status import pipeline_status

    store, progress = cycle.store, cycle.progress
    started = time.time()
    states: dict[str, str] = {}
    rollout, candidate, shown = None, None, 0
    while True:
        status = pipeline_status(store, run_id)
        rollout_step = next((s for s in status.steps if s.name == "rollout"), None)
        if candidate is None and rollout_step is not None and rollout_step.state != "pending":
            candidate = _rollout_candidate(store, status)
        if candidate is not None:
            rollout = rollout or _rollout_of(store, candidate, started)
            if rollout is not None:
                events = [e.details for e in rollout.events()]
                for details in events[shown:]:
                    if details.get("event"):
                        progress.note(describe_event(details))
                shown = len(events)
        for step in status.steps:
            if states.get(step.name) != step.state:
                states[step.name] = step.state
                if step.state != "pending":
                    progress.note(_step_line(step))
                if step.state in ("succeeded", "reused") and on_step is not None:
                    on_step(step)
        if status.ended:
            break
        if stop is not None and stop.wait(poll_s):
            raise InterruptedError(f"stopped following pipeline run {run_id}; the controller runs it on")
        if stop is None:
            time.sleep(poll_s)
    status.require()
    if rollout is None and candidate is not None:
        rollout = _rollout_of(store, candidate, started)
    if rollout is not None:
        outcome = _outcome(cycle, rollout, label)
        cycle.rollouts.append(outcome)
        progress.value("rollout", f"{outcome.state} (run {outcome.run}, hosted by the controller)")
    for step in status.steps:
        if step.duration_s is not None:
            cycle.timings[f"{label}: step {step.name}"] = step.duration_s
    return status


def _rollout_candidate(store, status) -> str | None:
    """The digest the rollout step rolls out: the output its input names (or the input itself)."""
    plan = store.runs.get(status.run_id).config
    step = next(s for s in plan["steps"] if s["name"] == "rollout")
    given = step["inputs"]["model"]
    if given.startswith("sha256:"):
        return given
    source, _, output = given.partition(".")
    return status.outputs(source).get(output)


def _outcome(cycle: Cycle, run, label: str) -> RolloutOutcome:
    """What the hosted rollout did, from its run's events: the traffic it set, and what the load saw then."""
    run = run.refresh()
    events = [dict(e.details, state=e.state) for e in run.events()]
    times = [float(e["t"]) for e in events if "t" in e]
    started, ended = (min(times), max(times)) if times else (time.time(), time.time())
    applied = [(float(e["t"]), dict(e["traffic"].get("weights") or {}), dict(e["traffic"].get("shadows") or {}))
               for e in events if isinstance(e.get("traffic"), dict) and "t" in e]
    load = cycle.made.get("load")
    outcome = next((e["event"] for e in reversed(events) if e.get("event") in ("promoted", "rolled-back")), None)
    return RolloutOutcome(
        label=label, run=run.id, candidate=run.config["candidate"], incumbent=run.config["incumbent"],
        state=outcome or run.state, events=events, applied=applied,
        seconds=load.timeline(started - 2, ended + 2) if load is not None else [], started=started, ended=ended,
        reason=next((e.get("reason", "") for e in reversed(events) if e.get("event") == "rolled-back"), ""))
