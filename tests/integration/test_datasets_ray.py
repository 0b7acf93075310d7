"""Dataset versions read in parallel as Ray Datasets, each exactly its own version."""

from __future__ import annotations

import pyarrow as pa
import ray

from factory.store import canonical_digest


def test_to_ray_reads_each_version_exactly(ray_cluster, store):
    """Ray Data reads version 1 and version 2 back with their own rows and digests."""
    v1_rows = pa.table({"id": pa.array(range(1000), pa.int64()), "x": pa.array([i * 0.5 for i in range(1000)])})
    v2_rows = pa.concat_tables([v1_rows, pa.table({"id": pa.array(range(1000, 1010), pa.int64()),
                                                   "x": pa.array([1.0] * 10)})])
    v1 = store.datasets.add(v1_rows, name="points", key=["id"])
    v2 = store.datasets.add(v2_rows, name="points", key=["id"])
    for version, rows in ((v1, v1_rows), (v2, v2_rows)):
        read = store.datasets.to_ray(version).to_arrow_refs()
        table = pa.concat_tables(ray.get(read)).select(rows.column_names)
        assert table.num_rows == rows.num_rows
        assert canonical_digest(table, key=["id"]) == version.digest
