"""Train a model with factory, from a laptop or as a Ray job.

    python examples/train.py                       # a local Ray cluster, a generated dataset
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 \
        --runtime-env cluster/runtime_env.yaml -- python examples/train.py --home s3://bucket/factory

Without ``--dataset`` it makes a small generated classification dataset (``toy``) in
the store first. It trains an MLP on it with Ray Train, then prints the package digest,
its candidate ref and its metrics. Under ``ray job submit`` the driver joins the
cluster through ``RAY_ADDRESS``, which the job runner sets; the store home must then
be one every node reaches (object storage or a shared disk).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=None, help="store root (default: $FACTORY_HOME or ./.factory)")
    parser.add_argument("--dataset", default=None, help="a dataset version digest (default: generate one)")
    parser.add_argument("--label", default="label")
    parser.add_argument("--features", default=None, help="comma-separated feature columns")
    parser.add_argument("--classes", type=int, default=2, help="classes of the label (ids 0..N-1)")
    parser.add_argument("--rows", type=int, default=4000, help="rows of the generated dataset")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "deepspeed"])
    parser.add_argument("--force", action="store_true", help="train even if an identical run finished")
    parser.add_argument("--num-cpus", type=float, default=None, help="CPUs of a Ray started here (default: all)")
    args = parser.parse_args(argv)

    from factory.store import Store
    from factory.train import train
    from factory.train._synthetic import classification_table, feature_names, mlp_config

    store = Store(args.home)
    if args.dataset is None:
        version = store.datasets.add(classification_table(args.rows, features=8, seed=0), name="toy", key=["id"])
        dataset, features = version.digest, feature_names(8)
        print(f"generated dataset toy@{version.version}: {dataset}", flush=True)
    else:
        dataset = args.dataset
        if not args.features:
            parser.error("--features is required with --dataset")
        features = args.features.split(",")
    config = mlp_config(
        dataset, features=features, name="example-mlp", label=args.label,
        architecture_config={"in_features": len(features), "out_features": args.classes, "hidden": [32, 32]},
        hyperparameters={"lr": 0.01, "batch_size": 64},
        compute={"workers": args.workers, "cpus_per_worker": args.cpus_per_worker},
        strategy={"kind": "deepspeed", "zero_stage": 2} if args.strategy == "deepspeed" else "ddp",
        epochs=args.epochs,
    )

    def progress(report) -> None:
        if report.end_of_epoch:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in report.metrics.items() if k not in ("epoch", "step"))
            print(f"epoch {int(report.epoch)}/{report.epochs}: {shown}", flush=True)

    # The code of record is the working tree holding this script, wherever it is run from.
    result = train(config, store=store, force=args.force, code_root=os.path.dirname(os.path.abspath(__file__)),
                   entry=(__file__,), progress=progress, num_cpus=args.num_cpus)
    summary = {"model": result.model, "candidate": result.candidate, "metrics": result.metrics,
               "config": result.config, "dataset": result.dataset, "code": result.code,
               "environment": result.environment, "reused": result.reused}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
