"""Trees: folders of files stored as one artifact, got back verified.

Every test that takes ``store`` runs twice: on a local home and on an S3 one (moto's server).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from factory.errors import CorruptBlobError, InvalidInputError, NotFoundError
from factory.settings import Settings


def _folder(root, files: dict[str, bytes], executable=()) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if rel in executable:
            path.chmod(0o755)


def _contents(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def store(any_store):
    """A fresh store on each kind of home: trees go through the blob store's local and object-store paths."""
    return any_store


def _flip_byte(blobs, path: str, offset: int) -> None:
    with blobs.fs.open_input_stream(path) as f:
        data = bytearray(f.read())
    data[offset] ^= 1
    with blobs.fs.open_output_stream(path) as f:
        f.write(bytes(data))


def _temporaries(blobs) -> list[str]:
    from pyarrow import fs as pafs

    infos = blobs.fs.get_file_info(pafs.FileSelector(f"{blobs.root}/tmp", allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "ckpt"
    _folder(src, {
        "latest": b"global_step10\n",
        "global_step10/mp_rank_00_model_states.safetensors": os.urandom(9 << 20),
        "global_step10/zero_pp_rank_0_optim_states.safetensors": os.urandom(1 << 20),
        "global_step10/zero_pp_rank_1_optim_states.safetensors": os.urandom(1 << 20),
        "zero_to_fp32.py": b"#!/usr/bin/env python\nprint('hi')\n",
        "empty.txt": b"",
    }, executable={"zero_to_fp32.py"})
    return src


def test_a_folder_round_trips_with_its_layout_bytes_and_executable_bits(store, folder, tmp_path):
    """What comes back from get is the folder that was put: paths, bytes, empty files and x bits."""
    artifact = store.trees.put(folder)
    assert artifact.kind == "tree" and artifact.name == "ckpt"
    assert artifact.metadata == {"files": 6, "size": sum(len(b) for b in _contents(folder).values())}
    out = store.trees.get(artifact.digest, tmp_path / "restored")
    assert _contents(out) == _contents(folder)
    assert os.access(out / "zero_to_fp32.py", os.X_OK)
    assert not os.access(out / "latest", os.X_OK)
    assert (out / "empty.txt").stat().st_size == 0


def test_the_digest_is_the_sha256_of_the_canonical_manifest(store, folder):
    """Anyone can recompute a tree's digest from its manifest: sorted keys, no spaces."""
    artifact = store.trees.put(folder)
    manifest = store.trees.manifest(artifact.digest)
    raw = store.blobs.get(artifact.digest)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == artifact.digest == manifest.digest
    doc = json.loads(raw)
    assert doc["format"] == "factory.tree/v1"
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    entry = manifest.files["global_step10/mp_rank_00_model_states.safetensors"]
    digest, size, executable = entry
    assert size == 9 << 20 and executable is False
    assert store.blobs.get(digest) == (folder / "global_step10/mp_rank_00_model_states.safetensors").read_bytes()
    assert manifest.files["zero_to_fp32.py"].executable is True


def test_the_same_folder_gives_the_same_digest_in_another_store(store, folder, tmp_path):
    """A tree's identity depends on its content only, not on where or when it was stored."""
    from factory.store import Store

    other = Store(tmp_path / "other", settings=Settings(home=str(tmp_path / "other")))
    assert store.trees.put(folder).digest == other.trees.put(folder).digest


def test_any_change_changes_the_digest(store, folder):
    """A changed byte, a renamed file or a flipped executable bit is a different tree."""
    first = store.trees.put(folder).digest
    (folder / "latest").write_bytes(b"global_step11\n")
    second = store.trees.put(folder).digest
    (folder / "latest").rename(folder / "latest2")
    third = store.trees.put(folder).digest
    (folder / "latest2").chmod(0o755)
    fourth = store.trees.put(folder).digest
    assert len({first, second, third, fourth}) == 4


def test_identical_files_are_stored_once(store, tmp_path):
    """Two files with the same bytes share one blob."""
    src = tmp_path / "twins"
    same = os.urandom(1 << 20)
    _folder(src, {"a.bin": same, "b/a.bin": same})
    manifest = store.trees.manifest(store.trees.put(src).digest)
    assert manifest.files["a.bin"].digest == manifest.files["b/a.bin"].digest
    blobs = [d for d in store.blobs.digests() if store.blobs.size(d) == 1 << 20]
    assert len(blobs) == 1


def test_a_link_to_a_file_inside_the_tree_is_stored_as_that_file(store, tmp_path):
    """An internal link (checkpoint 'latest' pointing at a step) comes back as the file it names."""
    src = tmp_path / "linked"
    _folder(src, {"step1/weights.bin": b"w" * 100})
    (src / "current.bin").symlink_to("step1/weights.bin")
    out = store.trees.get(store.trees.put(src).digest, tmp_path / "out")
    assert (out / "current.bin").read_bytes() == b"w" * 100 and not (out / "current.bin").is_symlink()


def test_get_into_an_empty_folder_works_and_into_a_full_one_is_refused(store, folder, tmp_path):
    """DEST may be new or empty; a folder with files in it is never written into."""
    digest = store.trees.put(folder).digest
    empty = tmp_path / "empty"
    empty.mkdir()
    store.trees.get(digest, empty)
    assert _contents(empty) == _contents(folder)
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        store.trees.get(digest, empty)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        store.trees.get(digest, tmp_path / "file")


def test_open_streams_one_file_and_catches_a_flipped_byte_at_its_end(store, folder):
    """Reading one file of a tree gives its bytes, and a tampered blob fails when read to the end."""
    digest = store.trees.put(folder).digest
    rel = "global_step10/zero_pp_rank_0_optim_states.safetensors"
    with store.trees.open(digest, rel) as f:
        assert f.read() == (folder / rel).read_bytes()
    assert store.trees.read_bytes(digest, "latest") == b"global_step10\n"
    _flip_byte(store.blobs, store.blobs.path(store.trees.manifest(digest).files[rel].digest), 12345)
    with store.trees.open(digest, rel) as f, pytest.raises(CorruptBlobError, match="corrupt"):
        f.read()
    with pytest.raises(NotFoundError, match="no file 'nope'"):
        store.trees.open(digest, "nope")


def test_a_blob_that_is_not_a_tree_is_refused_as_one(store, tmp_path):
    """Asking for the files of a plain blob says it is not a tree, and writes nothing."""
    digest = store.blobs.put(b'{"not": "a tree"}')
    with pytest.raises(InvalidInputError, match="not a tree manifest"):
        store.trees.get(digest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(NotFoundError, match="no tree"):
        store.trees.manifest("sha256:" + "0" * 64)


def test_a_failure_midway_publishes_nothing(store, folder, monkeypatch):
    """If one file cannot be stored, none of the tree's blobs become visible and no temporary stays."""
    from factory.store.blobs import BlobStore

    real = BlobStore.write_from
    calls = []

    def flaky(self, stream, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, stream, **kwargs)

    monkeypatch.setattr(BlobStore, "write_from", flaky)
    store.trees.workers = 1  # deterministic: the third file fails after two were written
    with pytest.raises(OSError, match="disk full"):
        store.trees.put(folder)
    assert list(store.blobs.digests()) == []
    assert _temporaries(store.blobs) == []


def test_put_of_something_that_is_not_a_folder_is_a_clear_error(store, tmp_path):
    """A file or a missing path given as a tree says to give a folder."""
    (tmp_path / "f").write_bytes(b"x")
    for path in (tmp_path / "f", tmp_path / "missing"):
        with pytest.raises(InvalidInputError, match="not a folder"):
            store.trees.put(path)


def test_a_large_file_streams_through_bounded_memory(tmp_path):
    """Putting and getting a 512 MiB file raises the process's peak memory by far less than the file."""
    src = tmp_path / "big"
    src.mkdir()
    with open(src / "weights.bin", "wb") as f:  # sparse: cheap on disk, still 512 MiB to read and hash
        f.truncate(512 << 20)
    script = textwrap.dedent(f"""
        import re
        from factory.settings import Settings
        from factory.store import Store

        def peak():
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) << 10

        store = Store({str(tmp_path / "home")!r}, settings=Settings(home={str(tmp_path / "home")!r}))
        store.trees  # import everything first
        before = peak()
        digest = store.trees.put({str(src)!r}).digest
        store.trees.get(digest, {str(tmp_path / "out")!r})
        print(peak() - before)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) < 128 << 20
    assert (tmp_path / "out" / "weights.bin").stat().st_size == 512 << 20


def test_a_parent_that_is_not_stored_is_refused_before_anything_is_written(store, folder):
    """A tree cannot name a parent the store does not hold, and the refusal writes nothing."""
    with pytest.raises(NotFoundError, match="record the parent first"):
        store.trees.put(folder, parents=["sha256:" + "1" * 64])
    assert list(store.blobs.digests()) == []


def test_verify_checks_every_file_of_a_tree(store, folder):
    """`store.verify()` passes a whole tree and names the tree when one of its file blobs is lost."""
    tree = store.trees.put(folder)
    report = store.verify()
    assert report.ok, report.problems
    lost = store.trees.manifest(tree.digest).files["latest"].digest
    store.blobs.fs.delete_file(store.blobs.path(lost))
    problems = [(p.what, p.problem, p.digest) for p in store.verify().problems]
    assert problems == [("content blob", "missing", lost)]
    assert tree.digest in store.verify().problems[0].detail
