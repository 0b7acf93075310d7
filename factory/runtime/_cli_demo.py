"""``factory demo``: the main job, walked through step by step on generated data.

For now the walkthrough covers the store (blobs, verification, dataset versions
with content digests and shared storage, derived artifacts, lineage and its
OpenLineage export) and a model packaged and validated behind its contract. Each step prints the CLI command that does the same thing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import typer

from factory.runtime._cli_common import console, plain, short_digest

_DEFAULT_HOME = ".factory/demo"


def demo(
    home: Path = typer.Option(Path(_DEFAULT_HOME), "--home", help="Store root for the demo (wiped first)."),
    rows: int = typer.Option(20_000, "--rows", min=100, help="Rows in the generated transactions table."),
) -> None:
    """Run the factory walkthrough on generated data in a fresh store."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from factory.settings import Settings
    from factory.store import Store

    if home.exists():
        shutil.rmtree(home)
    data = home / "inputs"
    data.mkdir(parents=True)
    store = Store(home / "store", settings=Settings(home=str(home / "store")))
    started = time.perf_counter()

    def step(n: int, title: str, command: str) -> None:
        console.print(f"\n[bold cyan]{n}. {title}[/bold cyan]", soft_wrap=True)
        console.print(f"   [dim]$ {plain(command)}[/dim]", highlight=False, soft_wrap=True)

    def show(label: str, value: object) -> None:
        console.print(f"   {label:<22} {plain(value)}", highlight=False, soft_wrap=True)

    # -- 1. raw data as an immutable blob ------------------------------------------
    table = _transactions(np.random.default_rng(7), rows, start_id=0)
    csv_path = data / "transactions.csv"
    pacsv.write_csv(table, csv_path)
    step(1, "Put the raw export in the content-addressed store", f"factory store put {csv_path}")
    raw = store.put_blob(csv_path)
    show("digest", raw.digest)
    show("stored at", store.blobs.path(raw.digest))
    again = store.put_blob(csv_path)
    show("put again", "same digest, nothing rewritten" if again.digest == raw.digest else "DIFFERENT (bug)")

    # -- 2. verification --------------------------------------------------------------
    step(2, "Verify every blob, then catch a flipped byte", "factory store verify")
    victim = store.blobs.put(b"a blob that will be damaged on disk")
    show("corrupt blobs", len(store.blobs.verify_all()))
    path = store.blobs.path(victim)
    original = Path(path).read_bytes()
    Path(path).write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    bad = store.blobs.verify_all()
    show("after flipping a byte", f"{len(bad)} corrupt: {bad[0].digest[:23]}... ({bad[0].reason[:40]}...)")
    Path(path).write_bytes(original)
    show("restored", f"{len(store.blobs.verify_all())} corrupt")

    # -- 3. dataset version 1 -----------------------------------------------------------
    step(3, "Ingest the CSV as dataset version 1 (Lance)", f"factory dataset add {csv_path} --name transactions --key txn_id")
    v1 = store.datasets.add(csv_path, name="transactions", key=["txn_id"], parents=[raw.digest])
    show("digest", v1.digest)
    show("rows", f"{v1.num_rows:,}")
    show("Lance version", f"{v1.uri} @ {v1.lance_version}")

    # -- 4. same rows, another format and order -------------------------------------
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    parquet_path = data / "transactions-shuffled.parquet"
    pq.write_table(shuffled, parquet_path, row_group_size=max(1, rows // 7))
    step(4, "The same rows shuffled, as Parquet: same digest, no new version",
         f"factory dataset add {parquet_path} --name transactions --key txn_id")
    same = store.datasets.add(parquet_path, name="transactions", key=["txn_id"])
    show("digest", same.digest)
    show("same as version 1", same.digest == v1.digest)
    show("versions of the name", len(store.datasets.versions("transactions")))

    # -- 5. version 2: 1 % more rows ---------------------------------------------------
    extra = _transactions(np.random.default_rng(8), max(1, rows // 100), start_id=rows)
    v2_table = pa.concat_tables([table, extra])
    arrow_path = data / "transactions-v2.arrow"
    feather.write_feather(v2_table, arrow_path, compression="uncompressed")
    step(5, "One percent more rows, as Arrow IPC: version 2, stored as an append",
         f"factory dataset add {arrow_path} --name transactions --key txn_id")
    v2 = store.datasets.add(arrow_path, name="transactions", key=["txn_id"], parents=[v1.digest])
    show("digest", v2.digest)
    show("rows", f"{v2.num_rows:,} (+{v2.num_rows - v1.num_rows:,})")
    lance_dir = Path(v2.uri)
    size_all = sum(p.stat().st_size for p in lance_dir.rglob("*") if p.is_file())
    show("Lance bytes, 2 versions", f"{size_all:,}")
    show("version 1 still reads", store.datasets.read(f"transactions@{v1.version}").num_rows == v1.num_rows)

    # -- 6. a derived artifact ---------------------------------------------------------
    step(6, "Record a training config pinned to version 2", "(the train layer does this)")
    config = store.artifacts.add(
        "training-config",
        name="fraud-mlp",
        metadata={"dataset": v2.digest, "architecture": "mlp-classifier", "lr": 0.01, "epochs": 5, "seed": 7},
        parents=[v2.digest],
    )
    show("digest", config.digest)

    # -- 7. lineage --------------------------------------------------------------------
    step(7, "Where did the config come from?", f"factory lineage {short_digest(config.digest)}")
    from rich.tree import Tree

    from factory.runtime._cli_lineage import _grow, _label

    node = store.lineage.upstream(config.digest)
    tree = Tree(_label(node))
    _grow(tree, node)
    console.print(tree)

    # -- 8. OpenLineage ------------------------------------------------------------------
    out = home / "openlineage.json"
    step(8, "Export lineage as OpenLineage RunEvents (spec 2-0-2)",
         f"factory lineage {short_digest(config.digest)} --format openlineage > {out}")
    events = store.lineage.openlineage_events(config.digest)
    out.write_text(json.dumps(events, indent=2))
    show("events", f"{len(events)} written to {out}")
    show("schema", events[0]["schemaURL"] if events else "-")

    # -- 9. a model behind its contract ------------------------------------------------
    step(9, "Package a model behind its contract and validate it, with no training",
         "factory contract package-example ...; factory contract validate DIGEST")
    from factory.contract import Contract, Provenance, Resources, default_registry, load, package, validate

    registry = default_registry()
    arch = registry.get("mlp-classifier")
    arch_config = {"in_features": 2, "out_features": 2, "hidden": [16, 16]}
    signature = arch.expected(arch_config)
    contract = Contract(
        name="fraud-mlp",
        description="Fraud classifier over (amount, hour); weights as initialised, before training.",
        inputs=signature.inputs,
        outputs=signature.outputs,
        resources=Resources(p99_latency_ms=20.0, max_batch_size=64),
        provenance=Provenance(training_config=config.digest, dataset=v2.digest),
    )
    pkg = package(store, arch.build(arch_config, seed=7), contract, registry=registry)
    show("model digest", pkg.digest)
    result = validate(pkg.digest, store=store, registry=registry)
    show("validation", f"{'ok' if result.ok else 'FAILED'}: {len(result.checks)} checks, "
                       f"{len(result.violations)} violations in {result.duration_s:.2f} s")
    for stat in result.latency:
        show(f"p99, batch {stat.batch_size}", f"{stat.p99_ms:.3f} ms (bound {result.p99_bound_ms:g} ms)")
    model = load(store, pkg.digest, registry=registry)
    sample = v2_table.slice(0, 3)
    features = np.stack([sample["amount"].to_numpy(), sample["hour"].to_numpy()], axis=1).astype("float32")
    out = model.predict({contract.inputs[0].name: features})
    show("loaded, predicts", {k: v.shape for k, v in out.items()})
    show("lineage of the model", f"{len(store.lineage.ancestors(pkg.digest))} ancestors, back to the raw CSV: "
                                 f"{raw.digest in store.lineage.ancestors(pkg.digest)}")

    where = plain(home / "store")
    console.print(f"\n[bold green]done[/bold green] in {time.perf_counter() - started:.1f} s; the store is in {where}")
    console.print(f"   try: [dim]factory dataset list --home {where}[/dim]", highlight=False)


def _transactions(rng, n: int, *, start_id: int):
    """A synthetic card-transaction table with a plausible fraud label."""
    import numpy as np
    import pyarrow as pa

    amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
    hour = rng.integers(0, 24, n)
    merchant = rng.choice(np.array(["grocery", "travel", "online", "fuel", "restaurant"]), n)
    score = 0.02 * amount / amount.mean() + (hour < 5) * 0.5 + (merchant == "online") * 0.3
    fraud = rng.random(n) < 1 / (1 + np.exp(-(score - 2.5) * 3))
    base = np.datetime64("2026-01-01T00:00:00", "s")
    ts = base + rng.integers(0, 300 * 86400, n).astype("timedelta64[s]")
    return pa.table({
        "txn_id": pa.array(np.arange(start_id, start_id + n), pa.int64()),
        "customer_id": pa.array(rng.integers(0, max(10, n // 20), n), pa.int64()),
        "ts": pa.array(ts, pa.timestamp("s", tz="UTC")),
        "amount": pa.array(amount, pa.float64()),
        "hour": pa.array(hour, pa.int64()),
        "merchant": pa.array(merchant, pa.string()),
        "is_fraud": pa.array(fraud, pa.bool_()),
    })
COMMANDS = {"demo": demo}
