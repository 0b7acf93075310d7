"""Runs ``factory tune`` on a cluster of its own and prints the CLI's JSON (used by test_tune.py).

It starts a one-node cluster with the dashboard (Ray Train inside Tune needs the State
API) and runs the ``factory tune`` command against it with ``--address``. Nothing here
tells Ray's processes which cluster is theirs: ``tune`` must, since the test machine runs
other Ray instances (the shared test cluster among them).
"""

from __future__ import annotations

import os
import subprocess
import sys

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def main(home: str, sweep_path: str, storage: str) -> int:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 200 * 2**20, "include_dashboard": True})
    try:
        cli = subprocess.run([EXE, "tune", sweep_path, "--home", home, "--address", cluster.address,
                              "--storage", storage, "--json"], capture_output=True, text=True)
        sys.stderr.write(cli.stderr)
        if cli.returncode == 0:
            print("RESULT " + " ".join(cli.stdout.split()), flush=True)
        return cli.returncode
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
