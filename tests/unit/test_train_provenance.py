"""Code and environment digests: the same tree and installation give the same digests, any change a new one."""

from __future__ import annotations

import subprocess

from factory.train import capture_code, capture_environment


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "train.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("*.log\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "v1")
    return root


def test_a_clean_tree_is_its_commit(tmp_path):
    """A clean working tree's digest names the commit and nothing else; a subfolder gives the same."""
    root = _repo(tmp_path)
    (root / "sub").mkdir()
    state = capture_code(root)
    assert state.commit and not state.dirty and state.changes is None
    assert capture_code(root / "sub").digest == state.digest
    (root / "run.log").write_text("ignored")
    assert capture_code(root).digest == state.digest


def test_uncommitted_edits_and_new_files_change_the_digest(tmp_path):
    """An edited file or a new untracked one is code too: runtime_env would ship it without .git."""
    root = _repo(tmp_path)
    clean = capture_code(root).digest
    (root / "train.py").write_text("print('v2')\n")
    edited = capture_code(root)
    assert edited.dirty and edited.digest != clean
    (root / "helper.py").write_text("x = 1\n")
    both = capture_code(root)
    assert both.untracked == 1 and both.digest not in (clean, edited.digest)
    assert capture_code(root).digest == both.digest
    (root / "helper.py").write_text("x = 2\n")
    assert capture_code(root).digest != both.digest


def test_outside_git_the_entry_files_are_the_code(tmp_path):
    """Without a repository the digest covers the script that ran, and changes with it."""
    script = tmp_path / "plain" / "train.py"
    script.parent.mkdir()
    script.write_text("a = 1\n")
    first = capture_code(script.parent, entry=(script,))
    assert first.commit is None and "train.py" in first.files
    script.write_text("a = 2\n")
    assert capture_code(script.parent, entry=(script,)).digest != first.digest


def test_environment_is_canonical_and_stable():
    """The installed distributions are listed by normalised name; two captures agree."""
    env = capture_environment()
    assert "torch" in env.distributions and "pydantic" in env.distributions
    assert all(name == name.lower() and "_" not in name for name in env.distributions)
    assert capture_environment().digest == env.digest
    assert env.document()["python"].startswith("CPython")
