"""Storage of 10 dataset versions, each adding 1 % rows, against a full copy per version.

``store.datasets.add`` of versions 1..10 of one name (version 1: the base rows; each later
version: the previous rows plus 1 % of the base, handed over in a fresh random order) into
one store, side by side with the naive peer: a Lance dataset overwritten with each whole
version (a full copy per version). Reports the bytes on disk after 10 versions against
one version's bytes (goal <= 1.2x), the median time to add a version, and the time to
canonical-hash 1 M rows against SHA-256 of the same column buffers alone (the limit).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks._util import machine, median, print_table, time_call

VERSIONS = 10


def _table(rows: int, seed: int = 0) -> pa.Table:
    """Ids, a timestamp, two numbers, a category and a short free-text column."""
    rng = np.random.default_rng(seed)
    cities = np.array([f"city-{i:03d}" for i in range(200)])
    words = np.array(["ok", "late", "refund", "gift", "promo", "bulk", "retry", "fraud?"])
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "ts": pa.array(1_700_000_000_000_000 + rng.integers(0, 10**12, rows), pa.timestamp("us")),
            "amount": rng.lognormal(3, 1, rows).round(2),
            "qty": rng.integers(1, 20, rows).astype(np.int32),
            "city": pa.array(cities[rng.integers(0, len(cities), rows)]),
            "note": pa.array(np.char.add(words[rng.integers(0, len(words), rows)], rng.integers(0, 10**6, rows).astype(str))),
        }
    )


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _shuffled(table: pa.Table, seed: int) -> pa.Table:
    return table.take(np.random.default_rng(seed).permutation(table.num_rows))


def _raw_sha256(table: pa.Table) -> None:
    h = hashlib.sha256()
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 k base rows instead of 1 M")
    parser.add_argument("--rows", type=int, default=None, help="base rows (default 1 M, --quick 100 k)")
    args = parser.parse_args(argv)
    base = args.rows or (100_000 if args.quick else 1_000_000)
    step = base // 100
    full = _table(base + step * (VERSIONS - 1))
    inputs = [_shuffled(full.slice(0, base + step * i), seed=i) for i in range(VERSIONS)]

    from factory.settings import Settings
    from factory.store import Store
    from factory.store._canonical import canonical_digest

    work = Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    try:
        store = Store(work / "home", settings=Settings(home=str(work / "home")))
        add_times, sizes = [], []
        for i, table in enumerate(inputs):
            start = time.perf_counter()
            v = store.datasets.add(table, name="sales", key=["id"])
            add_times.append(time.perf_counter() - start)
            assert v.version == i + 1 and v.num_rows == table.num_rows
            sizes.append(_bytes(Path(v.uri)))
        one_version = sizes[0]
        ours = sizes[-1]

        import lance

        peer_uri = work / "full-copies.lance"
        peer_times = []
        for i, table in enumerate(inputs):
            start = time.perf_counter()
            lance.write_dataset(table, peer_uri, mode="create" if i == 0 else "overwrite")
            peer_times.append(time.perf_counter() - start)
        peer = _bytes(peer_uri)
        last_alone = work / "last-alone.lance"
        lance.write_dataset(inputs[-1], last_alone)
        last_bytes = _bytes(last_alone)

        million = _shuffled(full.slice(0, min(1_000_000, full.num_rows)), seed=99)
        hash_times = time_call(lambda: canonical_digest(million, key=["id"]), repeat=5)
        limit_times = time_call(lambda: _raw_sha256(million), repeat=5)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = 2**20
    print(f"{VERSIONS} versions of {base:,} base rows (+{step:,} rows each), {full.num_columns} columns, on {machine()}")
    print_table(
        "storage after 10 versions",
        ["store", "MiB on disk", "x one version"],
        [
            ("one version (version 1 alone)", one_version / mib, 1.0),
            ("last version alone (fresh write)", last_bytes / mib, last_bytes / one_version),
            ("factory datasets, 10 versions", ours / mib, ours / one_version),
            ("Lance full copy per version (peer)", peer / mib, peer / one_version),
        ],
    )
    first, later = add_times[0], median(add_times[1:])
    print_table(
        "time (s)",
        ["operation", "median", "min", "max"],
        [
            ("add version 1 (full write)", first, first, first),
            ("add versions 2-10 (+1 % rows each)", later, min(add_times[1:]), max(add_times[1:])),
            ("peer: overwrite with whole version", median(peer_times[1:]), min(peer_times[1:]), max(peer_times[1:])),
            (f"canonical hash of {million.num_rows:,} rows", median(hash_times), min(hash_times), max(hash_times)),
            ("limit: SHA-256 of the same buffers", median(limit_times), min(limit_times), max(limit_times)),
        ],
    )
    ratio = ours / one_version
    print(f"peer (full copies) / factory datasets bytes: {peer / ours:.2f}x")
    print(f"bytes after {VERSIONS} versions / one version: {ratio:.3f}x (goal <= 1.2x)")
    return {
        "base_rows": base,
        "one_version_bytes": one_version,
        "ten_versions_bytes": ours,
        "peer_full_copies_bytes": peer,
        "add_version_median_s": later,
        "add_first_version_s": first,
        "peer_overwrite_median_s": median(peer_times[1:]),
        "canonical_hash_1m_rows_s": median(hash_times),
        "sha256_limit_1m_rows_s": median(limit_times),
        "ratio_vs_one_version": ratio,
    }


if __name__ == "__main__":
    main()
