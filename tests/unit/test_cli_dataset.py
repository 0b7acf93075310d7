"""``factory dataset add/list/show`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from factory.errors import InvalidInputError, NotFoundError, SchemaChangeError
from factory.runtime._cli_dataset import app

runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    """The same rows as CSV and Parquet, and a CSV with one more row."""
    t = pa.table({"id": [1, 2, 3], "price": [0.5, 1.5, None], "city": ["Oslo", "Lima", "Pune"]})
    pacsv.write_csv(t, tmp_path / "v1.csv")
    pq.write_table(t.take([2, 0, 1]), tmp_path / "v1.parquet")
    more = pa.concat_tables([t, pa.table({"id": [4], "price": [2.0], "city": ["Kyiv"]})])
    pacsv.write_csv(more, tmp_path / "v2.csv")
    pacsv.write_csv(more.drop_columns(["city"]), tmp_path / "narrow.csv")
    return tmp_path


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=True)


def test_add_list_show(files):
    """add prints new/unchanged with the digest; list and show report the versions, as tables and JSON."""
    home = str(files / "home")
    first = _run("add", str(files / "v1.csv"), "--name", "sales", "--key", "id", "--home", home)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("new: sales@1 sha256:")
    same = _run("add", str(files / "v1.parquet"), "--name", "sales", "--home", home, "--json")
    info = json.loads(same.output)
    assert info["status"] == "unchanged" and info["version"] == 1 and info["key"] == ["id"]
    assert info["digest"] in first.output
    second = json.loads(_run("add", str(files / "v2.csv"), "-n", "sales", "--home", home, "--json").output)
    assert second["status"] == "new" and second["version"] == 2 and second["rows"] == 4

    listed = json.loads(_run("list", "--home", home, "--json").output)
    assert [(r["name"], r["versions"], r["latest"], r["rows"]) for r in listed] == [("sales", 2, second["digest"], 4)]
    table = _run("list", "--home", home)
    assert "sales" in table.output and second["digest"][:19] in table.output

    shown = json.loads(_run("show", "sales@1", "--home", home, "--json").output)
    assert shown["digest"] == info["digest"] and shown["rows"] == 3 and shown["lance"]["version"] == 1
    assert shown["schema"] == [{"name": "id", "type": "int64"}, {"name": "price", "type": "double"},
                               {"name": "city", "type": "string"}]
    text = _run("show", second["digest"][:16], "--home", home)
    assert text.exit_code == 0 and second["digest"] in text.output and "sales@2" in text.output


def test_bad_input_raises_user_errors(files):
    """Bad files, names, keys and refs surface as the user errors the root handler turns into exit 2."""
    home = str(files / "home")
    cases = [
        (("add", str(files / "missing.csv"), "--name", "s"), InvalidInputError),
        (("add", str(files / "v1.csv"), "--name", "no good"), InvalidInputError),
        (("add", str(files / "v1.csv"), "--name", "s", "--key", "id,nope"), InvalidInputError),
        (("show", "s@1"), NotFoundError),
    ]
    for args, error in cases:
        result = _run(*args, "--home", home)
        assert isinstance(result.exception, error), (args, result.output)
    assert not (files / "home" / "datasets").exists()
    assert _run("add", str(files / "v1.csv"), "--name", "s", "--home", home).exit_code == 0
    changed = _run("add", str(files / "narrow.csv"), "--name", "s", "--home", home)
    assert isinstance(changed.exception, SchemaChangeError)
    allowed = _run("add", str(files / "narrow.csv"), "--name", "s", "--allow-schema-change", "--home", home)
    assert allowed.exit_code == 0 and allowed.output.startswith("new: s@2")


def test_module_imports_nothing_heavy():
    """Importing the CLI module loads neither Lance, pyarrow nor pandas (factory --help stays fast)."""
    code = (
        "import sys, factory.runtime._cli_dataset;"
        "print([m for m in ('lance', 'pyarrow', 'pandas', 'ray', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
