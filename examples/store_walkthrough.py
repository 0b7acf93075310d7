"""A driver for `ray job submit`: record a dataset version through the cluster's store actor.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 \
        --runtime-env cluster/runtime_env.yaml -- python examples/store_walkthrough.py
"""

from __future__ import annotations

import pyarrow as pa
import ray

from factory.store import store_actor


def main() -> None:
    ray.init(address="auto")
    store = store_actor()
    table = pa.table({"id": list(range(1000)), "x": [i * 0.5 for i in range(1000)]})
    version = ray.get(store.add_dataset.remote(table, name="example", key=["id"]))
    print(f"dataset example: version {version.version}, digest {version.digest}")


if __name__ == "__main__":
    main()
