"""The `factory` command as a user runs it: a real process, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

EXE = os.path.join(os.path.dirname(sys.executable), "factory")


def run(*args: str, home=None) -> subprocess.CompletedProcess:
    argv = [EXE, *args]
    if home is not None:
        argv += ["--home", str(home)]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def test_help_lists_every_verb():
    """`factory --help` names each area a user can reach."""
    res = run("--help")
    assert res.returncode == 0
    for verb in ("store", "dataset", "refs", "lineage", "demo"):
        assert verb in res.stdout


def test_cli_import_loads_no_heavy_library():
    """Loading the CLI pays for none of torch, ray, lance, pyarrow or pydantic."""
    code = "import sys, factory.runtime._entry, factory.runtime._prefetch, factory.runtime.cli; print(sorted(m for m in ('torch','ray','lance','pyarrow','pandas','pydantic') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_put_get_round_trip(tmp_path):
    """put prints the digest; get writes the identical bytes."""
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(100_000))
    put = run("store", "put", str(src), "--json", home=tmp_path / "h")
    assert put.returncode == 0, put.stderr
    digest = json.loads(put.stdout)["digest"]
    got = run("store", "get", digest[:20], "-o", str(tmp_path / "copy.bin"), home=tmp_path / "h")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "copy.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    "args, message",
    [
        (("store", "put", "/no/such/file"), "no such file"),
        (("store", "get", "sha256:" + "0" * 64, "-o", "out.bin"), "no blob"),
        (("lineage", "sha256:" + "1" * 64), "no artifact"),
        (("refs", "set", "bad name", "sha256:" + "1" * 64), "not a valid ref name"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    """Bad input: exit 2, one line on stderr that says what was wrong, nothing written."""
    res = run(*args, home=tmp_path / "h")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out.bin").exists()
    blobs = tmp_path / "h" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


def test_large_put_through_the_head_start_stores_the_exact_file(tmp_path):
    """A put big enough for the console script's head start stores the file, byte for byte."""
    import hashlib

    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(20 << 20))
    home = tmp_path / "h"
    put = run("store", "put", "--json", f"--home={home}", str(src))
    assert put.returncode == 0, put.stderr
    out = json.loads(put.stdout)
    assert out["digest"] == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert out["name"] == "weights.bin" and out["size"] == 20 << 20
    hexd = out["digest"].removeprefix("sha256:")
    assert (home / "blobs" / hexd[:2] / hexd).read_bytes() == src.read_bytes()
    assert list((home / "blobs" / "tmp").iterdir()) == []
    assert run("store", "verify", home=home).returncode == 0


def test_large_put_goes_to_the_store_named_by_factory_home(tmp_path):
    """With no --home, the head start and the verb both use $FACTORY_HOME, and nothing lands in the cwd."""
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(20 << 20))
    home, cwd = tmp_path / "from-env", tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([EXE, "store", "put", str(src), "--json"], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "FACTORY_HOME": str(home)})
    assert res.returncode == 0, res.stderr
    hexd = json.loads(res.stdout)["digest"].removeprefix("sha256:")
    assert (home / "blobs" / hexd[:2] / hexd).read_bytes() == src.read_bytes()
    assert list(cwd.iterdir()) == []


def test_a_head_start_the_verb_never_takes_leaves_nothing(tmp_path, monkeypatch):
    """If the CLI fails after the head start began writing, the temporary is removed and no blob appears."""
    from factory.runtime import _entry, cli

    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(20 << 20))
    home = tmp_path / "h"

    def failing_cli(argv):
        import time

        deadline = time.monotonic() + 30
        while not list((home / "blobs").rglob("*.part")):  # wait until the head start is writing
            assert time.monotonic() < deadline, "the head start never began writing"
            time.sleep(0.001)
        raise SystemExit(2)

    monkeypatch.setattr(cli, "main", failing_cli)
    codes: list[int] = []
    monkeypatch.setattr(_entry, "_exit", codes.append)
    _entry.main(["store", "put", str(src), "--home", str(home)])
    assert codes == [2]
    assert [p for p in (home / "blobs").rglob("*") if p.is_file()] == []


def test_usage_error_exits_2(tmp_path):
    """A missing argument is a usage error, exit 2."""
    assert run("store", "put").returncode == 2


def test_lineage_tree_and_openlineage(tmp_path, store):
    """`factory lineage` prints the tree upstream and exports RunEvents."""
    raw = store.put_blob(b"raw rows", name="raw.csv").digest
    cfg = store.artifacts.add("training-config", metadata={"lr": 0.1}, parents=[raw], name="cfg").digest
    tree = run("lineage", cfg, home=store.home)
    assert tree.returncode == 0, tree.stderr
    assert "training-config" in tree.stdout and "raw.csv" in tree.stdout
    down = run("lineage", raw, "--down", home=store.home)
    assert "cfg" in down.stdout
    ol = run("lineage", cfg, "--format", "openlineage", home=store.home)
    events = json.loads(ol.stdout)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert [o["name"] for o in events[-1]["outputs"]] == ["training-configs/cfg"]
    assert events[-1]["outputs"][0]["facets"]["version"]["datasetVersion"] == cfg


def test_a_dataset_added_from_a_file_exports_its_ingest(tmp_path):
    """`dataset add FILE` then `lineage --format openlineage`: the ingest run, the file in, the version out."""
    src = tmp_path / "transactions.csv"
    src.write_text("id,amount\n1,2.5\n2,3.0\n")
    added = run("dataset", "add", str(src), "--name", "transactions", "--json", home=tmp_path / "h")
    assert added.returncode == 0, added.stderr
    digest = json.loads(added.stdout)["digest"]
    events = json.loads(run("lineage", digest, "--format", "openlineage", home=tmp_path / "h").stdout)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert [i["name"] for i in events[-1]["inputs"]] == [str(src)]
    assert [o["name"] for o in events[-1]["outputs"]] == ["datasets/transactions"]
    tree = run("lineage", digest, home=tmp_path / "h")
    assert "external" in tree.stdout and "transactions.csv" in tree.stdout
