"""The CLI against hostile or awkward input: one-line errors with exit 2, user text printed as text."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from factory.runtime import cli


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Run `factory ARGS` in this process, as the console script does; (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), out, err


def one_line_error(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]


# -- user text is printed as text, never as Rich markup ------------------------------------
@pytest.mark.parametrize("text", ["[/x]", "[bold]loud", "[/]", "[link=file:///etc/passwd]x[/link]", "a\\"])
def test_a_blob_name_that_looks_like_markup_does_not_break_lineage(capsys, tmp_path, text):
    """`store put --name '[/x]'` then `lineage` prints the name literally instead of crashing."""
    src = tmp_path / "raw.csv"
    src.write_bytes(b"a\n1\n")
    home = str(tmp_path / "home")
    code, out, err = run(capsys, "store", "put", str(src), "--name", text, "--home", home)
    assert code == 0, err
    digest = out.strip()
    for args in (("lineage", digest), ("lineage", digest, "--down")):
        code, out, err = run(capsys, *args, "--home", home)
        assert code == 0, err
        assert text in out


@pytest.mark.parametrize("text", ["[/x]", "[bold]loud", "[/]"])
def test_a_ref_reason_that_looks_like_markup_does_not_break_refs_history(capsys, tmp_path, text):
    """`refs set --reason '[/x]'` then `refs history` and `refs list` show the reason as typed."""
    src = tmp_path / "raw.csv"
    src.write_bytes(b"a\n1\n")
    home = str(tmp_path / "home")
    digest = run(capsys, "store", "put", str(src), "--home", home)[1].strip()
    code, _, err = run(capsys, "refs", "set", "scratch/raw", digest, "--reason", text, "--home", home)
    assert code == 0, err
    code, out, err = run(capsys, "refs", "history", "scratch/raw", "--home", home)
    assert code == 0, err
    assert text in out
    assert run(capsys, "refs", "list", "--home", home)[0] == 0


def test_a_csv_column_that_looks_like_markup_shows_literally(capsys, tmp_path):
    """`dataset show` prints a column named '[/x]' and a source file named '[b]x.csv' as they are."""
    src = tmp_path / "[b]x.csv"
    src.write_text("[/x],id\n1,2\n")
    home = str(tmp_path / "home")
    assert run(capsys, "dataset", "add", str(src), "--name", "d", "--home", home)[0] == 0
    code, out, err = run(capsys, "dataset", "show", "d", "--home", home)
    assert code == 0, err
    assert "[/x]" in out and "[b]x.csv" in out
    assert run(capsys, "dataset", "list", "--home", home)[0] == 0


# -- store get -o ---------------------------------------------------------------------------
@pytest.fixture
def stored(capsys, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"new content")
    home = str(tmp_path / "home")
    return home, run(capsys, "store", "put", str(src), "--home", home)[1].strip()


def test_store_get_refuses_to_overwrite_a_file_without_force(capsys, tmp_path, stored):
    """`store get -o EXISTING_FILE` leaves the file alone and says to pass --force; with --force it writes."""
    home, digest = stored
    target = tmp_path / "keep.txt"
    target.write_bytes(b"precious")
    code, _, err = run(capsys, "store", "get", digest, "-o", str(target), "--home", home)
    one_line_error(code, err, "exists", "--force")
    assert target.read_bytes() == b"precious"
    code, _, err = run(capsys, "store", "get", digest, "-o", str(target), "--force", "--home", home)
    assert code == 0, err
    assert target.read_bytes() == b"new content"


def test_store_get_into_a_folder_or_below_a_file_is_a_one_line_error(capsys, tmp_path, stored):
    """`-o EXISTING_DIR` and `-o FILE/below` exit 2 with one line, and write nothing."""
    home, digest = stored
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run(capsys, "store", "get", digest, "-o", str(folder), "--home", home)
    one_line_error(code, err, "folder")
    assert list(folder.iterdir()) == []
    code, _, err = run(capsys, "store", "get", digest, "-o", str(folder), "--force", "--home", home)
    one_line_error(code, err, "folder")
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    code, _, err = run(capsys, "store", "get", digest, "-o", str(plain / "below.bin"), "--home", home)
    one_line_error(code, err, "not a folder")
    assert plain.read_bytes() == b"x"


# -- table input ----------------------------------------------------------------------------
@pytest.mark.parametrize("key", [",", " , ", ",,"])
def test_a_key_that_names_no_column_is_refused(capsys, tmp_path, key):
    """`dataset add --key ','` is an error naming the option, not a silent keyless add."""
    src = tmp_path / "t.csv"
    src.write_text("id,v\n1,2\n")
    home = str(tmp_path / "home")
    code, _, err = run(capsys, "dataset", "add", str(src), "--name", "t", "--key", key, "--home", home)
    one_line_error(code, err, "--key")
    assert run(capsys, "dataset", "list", "--home", home, "--json")[1].strip() in ("[]", "")


def test_a_key_with_an_empty_part_is_refused(capsys, tmp_path):
    """`--key 'id,,v'` says which part is empty instead of dropping it."""
    src = tmp_path / "t.csv"
    src.write_text("id,v\n1,2\n")
    code, _, err = run(capsys, "dataset", "add", str(src), "--name", "t", "--key", "id,,v",
                       "--home", str(tmp_path / "home"))
    one_line_error(code, err, "--key")


def test_dataset_add_help_says_what_a_key_means(capsys):
    """`dataset add --help` says a key only orders rows and that duplicates are allowed."""
    code, out, _ = run(capsys, "dataset", "add", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "not unique" in text or "need not be unique" in text
    assert "ties" in text


def test_a_csv_header_that_is_not_utf8_is_a_one_line_error(capsys, tmp_path):
    """A Latin-1 CSV header gives 'not valid UTF-8' and exit 2, not a UnicodeDecodeError."""
    src = tmp_path / "latin1.csv"
    src.write_bytes("caf\xe9,id\n1,2\n".encode("latin-1"))
    home = str(tmp_path / "home")
    code, _, err = run(capsys, "dataset", "add", str(src), "--name", "t", "--home", home)
    one_line_error(code, err, "UTF-8")


def test_a_50_mb_csv_cell_is_read(tmp_path):
    """A CSV with a 50 MB cell reads in full, with no advice the CLI gives no way to follow."""
    from factory.store import read_table_file

    big = "x" * (50 << 20)
    src = tmp_path / "big.csv"
    with open(src, "w") as f:
        f.write("id,blob\n1,short\n2,")
        f.write(big)
        f.write("\n3,end\n")
    table = read_table_file(src)
    assert table.num_rows == 3
    assert len(table.column("blob")[1].as_py()) == 50 << 20
    del big


# -- features register ----------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"name: [unclosed\n", b"a: b: c\n", b"- x\n y: z\n", b"\xff\xfe\x00bad",
                                     b"&a [*a]\n"])
def test_malformed_yaml_in_features_register_is_a_one_line_error(capsys, tmp_path, content):
    """`features register BAD.yaml` names the file and exits 2, never a ParserError traceback."""
    path = tmp_path / "view.yaml"
    path.write_bytes(content)
    code, _, err = run(capsys, "features", "register", str(path), "--home", str(tmp_path / "home"))
    one_line_error(code, err, str(path))


# -- contract verbs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (("--name", "../x"), ("--name",)),
        (("--name", "m\n"), ("--name",)),
        (("--hidden", "-1"), ("--hidden",)),
        (("--hidden", "16,0"), ("--hidden",)),
        (("--hidden", "a,b"), ("--hidden",)),
        (("--p99-ms", "inf"), ("--p99-ms",)),
        (("--p99-ms", "nan"), ("--p99-ms",)),
        (("--p99-ms", "-1"), ("--p99-ms",)),
        (("--max-batch", "100000000"), ("--max-batch",)),
        (("--in-features", "100000000"), ("--in-features",)),
    ],
)
def test_package_example_with_bad_options_is_a_one_line_error(capsys, tmp_path, args, words):
    """`contract package-example` with a bad option names the option and exits 2, writing nothing."""
    home = tmp_path / "home"
    code, _, err = run(capsys, "contract", "package-example", *args, "--home", str(home))
    one_line_error(code, err, *words)
    assert not (home / "blobs").exists() or not [p for p in (home / "blobs").rglob("*") if p.is_file()]


def test_contract_export_onto_a_file_is_a_one_line_error(capsys, tmp_path):
    """`contract export -o EXISTING_FILE` (or a path below a file) exits 2 with one line."""
    home = str(tmp_path / "home")
    code, out, err = run(capsys, "contract", "package-example", "--home", home)
    assert code == 0, err
    digest = out.strip()
    target = tmp_path / "file.txt"
    target.write_text("keep")
    code, _, err = run(capsys, "contract", "export", digest, "-o", str(target), "--home", home)
    one_line_error(code, err, "not a folder")
    code, _, err = run(capsys, "contract", "export", digest, "-o", str(target / "below"), "--home", home)
    one_line_error(code, err, "not a folder")
    assert target.read_text() == "keep"


def test_contract_validate_gives_a_crash_its_own_exit_code(capsys, tmp_path, monkeypatch):
    """A validator crash exits 4 with one line, apart from 1 (violations) and 2 (bad input)."""
    import factory.contract

    home = str(tmp_path / "home")
    digest = run(capsys, "contract", "package-example", "--home", home)[1].strip()

    def crash(*args, **kwargs):
        raise RuntimeError("boom inside the validator")

    monkeypatch.setattr(factory.contract, "validate", crash)
    code, _, err = run(capsys, "contract", "validate", digest, "--home", home)
    assert code == 4
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "crashed" in lines[0] and "boom inside the validator" in lines[0]
    code, out, _ = run(capsys, "contract", "validate", "--help")
    text = " ".join(out.split())
    for word in ("0", "1", "2", "4"):
        assert f"{word}:" in text or f"{word} " in text
    assert "crash" in text


def test_contract_validate_json_still_reports_violations_with_exit_1(capsys, tmp_path):
    """A package that breaks its contract keeps exit 1 (and valid JSON), distinct from a crash."""
    home = str(tmp_path / "home")
    digest = run(capsys, "contract", "package-example", "--p99-ms", "0.000001", "--home", home)[1].strip()
    code, out, _ = run(capsys, "contract", "validate", digest, "--json", "--runs", "3", "--home", home)
    assert code == 1
    assert json.loads(out)["ok"] is False


def test_csv_round_trip_still_works(tmp_path):
    """The CSV reader still reads an ordinary file, types and all."""
    from factory.store import read_table_file

    pacsv.write_csv(pa.table({"id": [1, 2], "s": ["a", "b"]}), tmp_path / "ok.csv")
    assert read_table_file(tmp_path / "ok.csv").to_pylist() == [{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]
