"""``run_demo``: the whole factory cycle on the embedded Ray cluster.

1. Month one of a generated credit book becomes dataset versions; a training set is a
   point-in-time join against two feature views. A baseline trained with 2 workers passes
   the prod gates and is deployed to prod: the incumbent (phases called here directly: the
   first version of a model needs a deployment, which is not a pipeline step).
2. Steady traffic starts. The store's controller actor (detached, named, in namespace
   ``factory``) runs the candidate's pipeline: month two arrives as new dataset versions,
   ``features`` builds the training set, a Tune sweep packages the best trial, which is
   evaluated and gated, and the controller rolls it out through shadow and the canary steps
   to promoted, on Serve's traffic control and the replicas' measured signals (the timed
   cycle: dataset version to 100 % production).
3. A candidate trained on faulty labels (a second pipeline, submitted when the good one's
   rollout starts, so it trains meanwhile) passes its offline gates; its rollout (a third,
   once the good one is promoted) sees it diverge from production in shadow and rolls it
   back automatically, with evidence and a ticket.

The phases are the functions of ``_demo_phases``, the pipelines those of ``_demo_pipelines``;
this module orders them. Serve's controller and proxy start while the baseline trains.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from factory.runtime._client import submit_pipeline
from factory.runtime._demo_pipelines import Made, candidate_pipeline, faulty_pipeline, follow, rollout_pipeline

from factory.runtime._demo_phases import (
    INPUT,
    MODEL,
    Cycle,
    Options,
    Progress,
    deploy_prod,
    gate,
    holdout_rows,
    ingest,
    train_model,
    training_set,
)

__all__ = ["run_demo"]


def run_demo(store, options: Options, progress: Progress, *, after=None) -> Cycle:
    """Run the cycle on ``store`` (a fresh one); ``after(cycle)`` runs while the endpoint still serves."""
    from factory.runtime._demo_cluster import embedded_cluster
    from factory.runtime._demo_traffic import Load
    from factory.serve import ensure_serve

    cycle = Cycle(store, options, progress)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        with cycle.timed("start the embedded Ray cluster"):
            cycle.cluster = stack.enter_context(embedded_cluster(num_cpus=options.cluster_cpus))
        progress.value("dashboard", cycle.cluster.dashboard_url or "-")
        beside = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="demo-beside"))
        leaving = threading.Event()  # set first on the way out: a pipeline followed beside stops being waited on
        stack.callback(leaving.set)

        with cycle.timed("baseline: month 1 data, features"):
            data = ingest(cycle, month=0)
            trained, evaluation = training_set(cycle, data)
        with cycle.timed("baseline: train (Ray Train, 2 workers; Serve and the controller start meanwhile)"):
            serving = beside.submit(ensure_serve, store.settings)
            controller = beside.submit(_start_controller, store)
            baseline = train_model(cycle, trained.digest)
        with cycle.timed("baseline: prod gates"):
            gate(cycle, baseline.model, evaluation=evaluation.digest, reference=trained.digest)
        with cycle.timed("baseline: deploy to prod"):
            serving.result()
            deploy_prod(cycle, baseline.model)
        cycle.made["baseline"] = baseline
        progress.value("controller", controller.result())

        rows, labels = holdout_rows(cycle, evaluation.digest)
        load = stack.enter_context(Load(cycle.endpoint["url"], MODEL, rows, labels, input_name=INPUT,
                                        rate=options.rate))
        cycle.made["load"] = load

        cycle_started = time.perf_counter()
        faulty: dict[str, Any] = {}
        with cycle.timed("candidate pipeline: month 2 ingest, features, Tune sweep, prod gates, "
                         "shadow, canary, promotion, evaluation (the controller actor runs it)"):
            def step_done(step) -> None:
                if step.name in ("ingest", "features"):
                    faulty[step.name] = dict(step.outputs)
                if step.name == "evaluate":
                    _show_evaluation(cycle, step.outputs["evaluation"])
                if step.name == "gates" and options.faulty:  # the rollout starts: the faulty one trains meanwhile
                    pipeline = faulty_pipeline(cycle, faulty["ingest"], faulty["features"]["dataset"])
                    faulty["run"] = submit_pipeline(pipeline, store=store)
                    faulty["followed"] = beside.submit(follow, cycle.beside("faulty candidate"), faulty["run"],
                                                       label="faulty candidate", stop=leaving)
                if step.name == "gates":
                    _record_gates(cycle, step)

            status = run_on_controller(cycle, candidate_pipeline(cycle), label="candidate", on_step=step_done)
        cycle.timings["candidate: dataset version to 100 % production"] = time.perf_counter() - cycle_started
        cycle.made["candidate"] = Made(status.outputs("tune")["model"])

        if options.faulty:
            with cycle.timed("faulty candidate pipeline: features with inverted labels, train (Ray Train, "
                             f"{options.faulty_workers} worker(s)), prod gates: the rest after the rollout"):
                trained_faulty = faulty["followed"].result()
                model = trained_faulty.outputs("train")["model"]
                _record_gates(cycle, trained_faulty.step("gates"))
            with cycle.timed("faulty candidate: rollout (the controller actor hosts it)"):
                run_on_controller(cycle, rollout_pipeline(cycle, model, name="credit-faulty-rollout"),
                                  label="faulty candidate")
            cycle.made["faulty"] = Made(model)
        if after is not None:
            after(cycle)
        load.stop()
    cycle.timings["whole demo"] = time.perf_counter() - started
    return cycle


def _start_controller(store) -> str:
    """The store's controller actor, created now so the first pipeline does not wait for it; where it runs."""
    import ray

    from factory.runtime._actor import CONTROLLER_NAMESPACE, controller_name, get_controller

    ray.get(get_controller(store).info.remote())
    return f"actor {controller_name(store)} (namespace {CONTROLLER_NAMESPACE}, class ControllerActor)"


def run_on_controller(cycle: Cycle, pipeline, *, label: str, on_step=None):
    """Submit ``pipeline`` to the controller actor and follow it to its end (raising if it failed)."""
    run_id = submit_pipeline(pipeline, store=cycle.store)
    cycle.progress.value("pipeline run", f"{run_id} ({pipeline.name})")
    return follow(cycle, run_id, label=label, on_step=on_step)


def _show_evaluation(cycle: Cycle, digest: str) -> None:
    measured = cycle.store.artifacts.get(digest).metadata
    cycle.progress.value("evaluation", ", ".join(f"{k} {v:.3f}" for k, v in sorted(measured["metrics"].items()))
                         + f" on {measured['rows']:,} holdout rows")


def _record_gates(cycle: Cycle, step) -> None:
    """The gate run a ``gates`` step made, for the summary and the report."""
    from factory.gates import gate_run

    details = cycle.store.runs.get(step.run).events()[-1].details or {}
    result = gate_run(cycle.store, details["gate_run"])
    cycle.gates[result.subject] = result
    cycle.progress.value("gates", f"{'passed' if result.passed else 'FAILED'} "
                                  f"({sum(o.passed for o in result.outcomes)}/{len(result.outcomes)}), "
                                  f"{len(result.outcomes)} attestations logged")
