"""Concurrent `dataset add` of one new name: no traceback, no orphan artifact or Lance version, every version exact."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import lance
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from factory.settings import Settings
from factory.store.datasets import DatasetMeta

WRITERS = 4


def _add_after_barrier(home: str, path: str, barrier, out: str) -> None:
    """`factory dataset add PATH --name new` in this process, started together with the others."""
    with open(out + ".out", "w") as stdout, open(out + ".err", "w") as stderr:
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        from factory.runtime import cli

        barrier.wait()
        cli.main(["dataset", "add", path, "--name", "new", "--key", "id", "--json", "--home", home])


def _race(tmp_path, tables: list[pa.Table]) -> tuple[list[int], list[dict], list[str]]:
    home = tmp_path / "home"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(tables))
    procs = []
    for i, table in enumerate(tables):
        path = tmp_path / f"part-{i}.csv"
        pacsv.write_csv(table, path)
        procs.append(ctx.Process(target=_add_after_barrier, args=(str(home), str(path), barrier, str(tmp_path / f"w{i}"))))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    outs = [(tmp_path / f"w{i}.out").read_text() for i in range(len(tables))]
    errs = [(tmp_path / f"w{i}.err").read_text() for i in range(len(tables))]
    results = [json.loads(out) if out.strip() else {} for out in outs]
    return [p.exitcode for p in procs], results, errs


def _store(tmp_path):
    from factory.store import Store

    return Store(tmp_path / "home", settings=Settings(home=str(tmp_path / "home")))


def _assert_no_orphans(store) -> None:
    """Every dataset artifact of the name is a version in its ref history, and every Lance version is one's."""
    versions = store.datasets.versions("new")
    artifacts = store.artifacts.find(kind="dataset", name="new")
    assert {a.digest for a in artifacts} == {v.digest for v in versions}
    recorded = {a.meta(DatasetMeta).lance_version for a in artifacts}
    latest = lance.dataset(versions[0].uri).version
    assert recorded == set(range(1, latest + 1)), (recorded, latest)


def test_four_first_adds_of_different_tables_each_become_a_version(tmp_path):
    """Four processes add four different tables to one new name at once: four versions, none lost, none orphaned."""
    tables = [pa.table({"id": list(range(i * 100, i * 100 + 50)), "v": [f"w{i}"] * 50}) for i in range(WRITERS)]
    codes, results, errs = _race(tmp_path, tables)
    assert codes == [0] * WRITERS, errs
    assert not any("Traceback" in e or "already exists" in e for e in errs), errs
    assert sorted(r["version"] for r in results) == [1, 2, 3, 4]
    assert all(r["status"] == "new" for r in results)
    store = _store(tmp_path)
    _assert_no_orphans(store)
    for result, table in zip(results, tables, strict=True):
        rows = store.datasets.read(f"new@{result['version']}")
        assert sorted(rows.to_pylist(), key=lambda r: r["id"]) == table.to_pylist()


def test_four_first_adds_of_the_same_table_make_one_version(tmp_path):
    """The same table added four times at once: one version, three 'unchanged', one Lance version."""
    table = pa.table({"id": list(range(100)), "v": ["same"] * 100})
    codes, results, errs = _race(tmp_path, [table] * WRITERS)
    assert codes == [0] * WRITERS, errs
    assert not any("Traceback" in e for e in errs), errs
    assert {r["digest"] for r in results} == {results[0]["digest"]}
    assert {r["version"] for r in results} == {1}
    store = _store(tmp_path)
    _assert_no_orphans(store)
    assert len(store.datasets.versions("new")) == 1


@pytest.mark.parametrize("moved_by", ["refs set"])
def test_an_add_that_loses_the_ref_starts_over_on_the_new_head(store, monkeypatch, moved_by):
    """When the ref moves between the write and the ref update, the add retries on the new head: no orphan."""
    base = store.datasets.add(pa.table({"id": [1, 2]}), name="new")
    other = store.datasets.add(pa.table({"id": [1, 2, 3]}), name="other")
    real_set = store.refs.set
    moved = []

    def set_after_someone_else(name, target, **kwargs):
        if not moved:
            moved.append(real_set("dataset/new", other.digest, reason=moved_by))
        return real_set(name, target, **kwargs)

    monkeypatch.setattr(store.refs, "set", set_after_someone_else)
    v = store.datasets.add(pa.table({"id": [1, 2, 4]}), name="new")
    assert v.version == 3 and store.refs.get("dataset/new") == v.digest
    history = [c.new for c in store.refs.history("dataset/new")]
    assert history == [base.digest, other.digest, v.digest]
    assert store.datasets.read(v).column("id").to_pylist() == [1, 2, 4]
    names = {a.digest for a in store.artifacts.find(kind="dataset", name="new")}
    assert names == {base.digest, v.digest}
