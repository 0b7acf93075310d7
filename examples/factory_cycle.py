"""The factory cycle as a Ray job: data, features, training, the gates, deployment and two rollouts.

Send it to a running cluster (``ray start --head``, or KubeRay) from the repository root:

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python examples/factory_cycle.py --home /shared/factory-cycle

It runs what ``factory demo`` runs on the cluster the job belongs to: the baseline's phases
(``factory/runtime/_demo_phases.py``), then the candidates as pipelines submitted to the
store's controller actor (``factory/runtime/_demo_pipelines.py``), which runs their steps as
Ray tasks and hosts their rollouts on Serve's traffic control and measured signals. The
controller (class ``ControllerActor``, namespace ``factory``, detached: it outlives the job),
Ray Train and Tune trials and Serve replicas all show in the dashboard beside the job. The
store is ``--home``
(default ``$FACTORY_HOME``; on a multi-node cluster, object storage with a PostgreSQL
catalog: see cluster/README.md). It prints the summary and writes the HTML report into
the home. ``--quick`` runs the reduced version (what the submitted-job test runs, the faulty
candidate included); ``--smoke`` the cheapest whole path (one trial, one canary step, no
faulty candidate).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("FACTORY_HOME", ".factory/cycle"),
                        help="the store home (a folder or s3:// URI)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller data and shorter analysis windows")
    size.add_argument("--smoke", action="store_true",
                      help="the cheapest whole path: a one-trial sweep, one canary step, no faulty candidate")
    parser.add_argument("--port", type=int, default=0, help="Serve's HTTP port when this job starts Serve (0: free)")
    args = parser.parse_args(argv)

    import ray
    from rich.console import Console

    from factory.runtime._demo import run_demo
    from factory.runtime._demo_cluster import free_port
    from factory.runtime._demo_phases import Options, Progress
    from factory.runtime._demo_summary import print_summary
    from factory.runtime._report import write_report
    from factory.settings import Settings
    from factory.store import Store

    console = Console(width=160)

    class Lines(Progress):
        """Plain progress lines: a job's log is a file, not a terminal."""

        def phase(self, name):
            console.print(f"> {name}", highlight=False)
            return super().phase(name)

        def note(self, text):
            console.print(f"  {text}", highlight=False)

        def value(self, label, value):
            console.print(f"  {label:<18} {value}", highlight=False)

    # A job's driver joins the cluster it was submitted to (RAY_ADDRESS is set by the job manager).
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
    settings = dataclasses.replace(Settings.from_env(), home=args.home, actor="factory-controller",
                                   serve_port=args.port or free_port())
    if "://" not in settings.home:
        settings = dataclasses.replace(settings, home=os.path.abspath(settings.home))
    store = Store(settings.home, settings=settings)
    options = Options.smoke() if args.smoke else Options.quick() if args.quick else Options()

    def finish(cycle) -> None:
        print_summary(console, cycle)
        report = write_report(cycle, os.path.join(settings.home, "report.html") if "://" not in settings.home
                              else "report.html")
        console.print(f"report {report}", highlight=False)

    cycle = run_demo(store, options, Lines(), after=finish)
    outcomes = {o.label: o.state for o in cycle.rollouts}
    console.print(f"done: the whole cycle took {cycle.timings['whole demo']:.1f} s; one candidate from dataset "
                  f"version to 100 % production {cycle.timings['candidate: dataset version to 100 % production']:.1f} s",
                  highlight=False)
    console.print(f"CYCLE {outcomes} in {cycle.timings['whole demo']:.1f} s", highlight=False)
    ray.shutdown()
    expected = {"candidate": "promoted", **({"faulty candidate": "rolled-back"} if options.faulty else {})}
    return 0 if outcomes == expected else 1


if __name__ == "__main__":
    sys.exit(main())
