"""``factory embeddings import/list/show/search/tag/index`` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.errors import InvalidInputError, NotFoundError
from factory.runtime._cli_embeddings import app
from factory.settings import Settings
from factory.store import Store
from factory.store.embeddings import HashingEncoder

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=True, env={"COLUMNS": "200"})


@pytest.fixture
def files(tmp_path):
    """A Parquet file of 50 rows with 8-d vectors under custom column names, and query files."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    table = pa.table({
        "key": [f"k{i}" for i in range(50)],
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 8),
        "lang": ["en" if i % 2 else "fr" for i in range(50)],
    })
    pq.write_table(table, tmp_path / "vectors.parquet")
    np.save(tmp_path / "q.npy", x[7])
    (tmp_path / "q.json").write_text(json.dumps([x[3].tolist(), x[4].tolist()]))
    return tmp_path


def test_import_list_show_search_tag(files):
    """import makes a collection from a file; list, show, search (npy and json) and tag report it."""
    home = str(files / "home")
    imported = _run("import", str(files / "vectors.parquet"), "--name", "vec", "--id-col", "key",
                    "--vector-col", "emb", "--home", home, "--json")
    assert imported.exit_code == 0, imported.output
    info = json.loads(imported.output)
    assert info["count"] == 50 and info["dim"] == 8 and info["version"] == 2
    assert info["columns"] == [{"name": "lang", "type": "string"}]
    store = Store(home, settings=Settings(home=home))
    kinds = {store.artifacts.get(p).kind: store.artifacts.get(p).name for p in store.lineage.parents(info["digest"])}
    assert kinds.get("external") == "vectors.parquet"  # the imported file is the version's input

    listed = _run("list", "--home", home)
    assert listed.exit_code == 0 and "vec" in listed.output and "50" in listed.output

    found = _run("search", "vec", "--vector-file", str(files / "q.npy"), "-k", "3", "--home", home, "--json")
    assert found.exit_code == 0, found.output
    rows = json.loads(found.output)[0]["rows"]
    assert rows[0]["id"] == "k7" and len(rows) == 3 and "lang" in rows[0]

    two = _run("search", "vec@2", "--vector-file", str(files / "q.json"), "-k", "1", "--filter", "lang = 'en'",
               "--home", home, "--json")
    assert two.exit_code == 0, two.output
    answers = json.loads(two.output)
    assert answers[0]["rows"][0]["id"] == "k3" and answers[1]["rows"][0]["id"] != "k4"
    assert all(r["rows"][0]["lang"] == "en" for r in answers)

    tagged = _run("tag", "vec@2", "first", "--home", home)
    assert tagged.exit_code == 0 and "vec/first" in tagged.output
    shown = _run("show", "vec@first", "--home", home)
    assert shown.exit_code == 0 and info["digest"] in shown.output and "first" in shown.output
    table = _run("search", "vec", "--vector-file", str(files / "q.npy"), "-k", "2", "--home", home)
    assert table.exit_code == 0 and "k7" in table.output and "exact" in table.output


def test_text_search_uses_the_collections_encoder(tmp_path):
    """--text encodes with the encoder the collection records, without naming it."""
    home = tmp_path / "home"
    store = Store(home, settings=Settings(home=str(home)))
    enc = HashingEncoder(32)
    store.embeddings.create("kb", encoder=enc)
    store.embeddings.add("kb", {"id": ["a", "b"], "text": ["red apples", "fast cars"]}, encoder=enc)
    found = _run("search", "kb", "--text", "apples", "-k", "1", "--home", str(home), "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["rows"][0]["id"] == "a"


@pytest.mark.parametrize(
    "args, error",
    [
        (["show", "nope"], NotFoundError),
        (["search", "vec"], InvalidInputError),
        (["search", "vec", "--text", "hello"], InvalidInputError),
        (["import", "missing.parquet", "--name", "x"], InvalidInputError),
        (["import", "VECTORS", "--name", "x", "--vector-col", "nope"], InvalidInputError),
        (["show", "vec@7"], NotFoundError),
    ],
)
def test_mistakes_are_user_errors(files, args, error):
    """Each mistake ends as a user error naming the problem (the root CLI prints it and exits 2)."""
    home = str(files / "home")
    assert _run("import", str(files / "vectors.parquet"), "--name", "vec", "--id-col", "key", "--vector-col", "emb",
                "--home", home).exit_code == 0
    args = [str(files / "vectors.parquet") if a == "VECTORS" else a for a in args]
    result = _run(*args, "--home", home)
    assert isinstance(result.exception, error), (args, result.output)
