"""``run_demo``: the whole factory cycle on the embedded Ray cluster, phase after phase.

1. Month one of a generated credit book becomes dataset versions; a training set is a
   point-in-time join against two feature views. A baseline trained with 2 workers passes
   the prod gates and is deployed to prod: the incumbent.
2. Steady traffic starts. Month two arrives as new dataset versions; a Tune sweep packages
   the best trial, the prod gates pass, and the candidate goes through shadow and the
   canary steps to promoted (the timed cycle: dataset version to 100 % production).
3. A candidate trained on faulty labels passes its offline gates but diverges from
   production live: the rollout rolls it back automatically, with evidence and a ticket.

The phases are the functions of ``_demo_phases``; this module only orders them, and
overlaps what the cycle allows: Serve's controller and proxy start while the baseline
trains, the sweep's trials run at once, and the faulty candidate trains while the good
one goes through its rollout (a rollout mostly waits for its windows).
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

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
    roll_out,
    sweep,
    train_model,
    training_set,
)

__all__ = ["run_demo"]


def run_demo(store, options: Options, progress: Progress, *, after=None) -> Cycle:
    """Run the cycle on ``store`` (a fresh one); ``after(cycle)`` runs while the endpoint still serves."""
    from factory.runtime._demo_cluster import embedded_cluster
    from factory.runtime._demo_traffic import Load, StoreTraffic
    from factory.serve import MemorySignals, ensure_serve

    cycle = Cycle(store, options, progress)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        with cycle.timed("start the embedded Ray cluster"):
            cycle.cluster = stack.enter_context(embedded_cluster(num_cpus=options.cluster_cpus))
        progress.value("dashboard", cycle.cluster.dashboard_url or "-")
        beside = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-beside"))

        with cycle.timed("baseline: month 1 data, features"):
            data = ingest(cycle, month=0)
            trained, evaluation = training_set(cycle, data)
        with cycle.timed("baseline: train (Ray Train, 2 workers; Serve starts meanwhile)"):
            serving = beside.submit(ensure_serve, store.settings)
            baseline = train_model(cycle, trained.digest)
        with cycle.timed("baseline: prod gates"):
            gate(cycle, baseline.model, evaluation=evaluation.digest, reference=trained.digest)
        with cycle.timed("baseline: deploy to prod"):
            serving.result()
            deploy_prod(cycle, baseline.model)
        cycle.made["baseline"] = baseline

        rows, labels = holdout_rows(cycle, evaluation.digest)
        signals = MemorySignals(slot_s=0.5)
        traffic = StoreTraffic(store, MODEL, [baseline.model])
        load = stack.enter_context(Load(cycle.endpoint["url"], MODEL, rows, labels, input_name=INPUT,
                                        signals=signals, traffic=traffic, rate=options.rate))
        cycle.made["load"] = load

        cycle_started = time.perf_counter()
        with cycle.timed("candidate: month 2 data, features"):
            data = ingest(cycle, month=1)
            trained, evaluation = training_set(cycle, data)
        with cycle.timed("candidate: Tune sweep, best trial packaged"):
            best = sweep(cycle, trained.digest).best
        with cycle.timed("candidate: prod gates"):
            gate(cycle, best.model, evaluation=evaluation.digest, reference=trained.digest)
        faulty_job = beside.submit(_train_faulty, cycle.beside("faulty candidate"), data) if options.faulty else None
        with cycle.timed("candidate: shadow, canary, promotion (the faulty candidate trains meanwhile)"):
            roll_out(cycle, best.model, baseline.model, label="candidate", load=load, traffic=traffic)
        cycle.timings["candidate: dataset version to 100 % production"] = time.perf_counter() - cycle_started
        cycle.made["candidate"] = best

        if faulty_job is not None:
            with cycle.timed("faulty candidate: data with inverted labels, train (Ray Train, 2 workers)"):
                faulty = faulty_job.result()
            with cycle.timed("faulty candidate: prod gates"):
                gate(cycle, faulty.model, evaluation=evaluation.digest, reference=trained.digest)
            incumbent = store.refs.get(f"model/{MODEL}/prod")
            with cycle.timed("faulty candidate: rollout"):
                roll_out(cycle, faulty.model, incumbent, label="faulty candidate", load=load, traffic=traffic)
            cycle.made["faulty"] = faulty
        if after is not None:
            after(cycle)
        load.stop()
    cycle.timings["whole demo"] = time.perf_counter() - started
    return cycle


def _train_faulty(cycle: Cycle, data):
    """The deliberately worse candidate: month 2 with inverted labels, trained by Ray Train (2 workers)."""
    started = time.perf_counter()
    faulty_set, _ = training_set(cycle, data, name="credit-training-faulty", corrupt=True)
    faulty = train_model(cycle, faulty_set.digest, hidden=(32,))
    cycle.progress.note(f"trained in {time.perf_counter() - started:.1f} s")
    return faulty
