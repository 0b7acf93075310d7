"""Code and environment digests, captured on the driver before anything is submitted.

Ray's ``runtime_env`` ships a working tree without ``.git``, so the driver is the only
place that can tell which commit the code is. The code state is the commit of the
user's working tree plus a digest of everything that differs from it (the diff of
tracked files, staged or not, and the untracked files git does not ignore). The
environment state is every installed distribution and its version, by normalised name,
plus the Python version. Each state is canonical JSON; its digest is the SHA-256 of
those bytes, so the same tree and the same installation give the same digests on any
machine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.store import canonical_json

__all__ = ["CodeState", "EnvironmentState", "capture_code", "capture_environment", "file_digest"]

log = logging.getLogger(__name__)

_NORMALISE = re.compile(r"[-_.]+")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CodeState:
    """Which code ran: a git commit and the digest of the changes on top of it.

    Outside a git repository there is no commit; the digest then covers the files
    named as ``entry`` (the script or config that was run), which is the best that
    can be said about code nobody committed.
    """

    root: str
    commit: str | None
    dirty: bool
    changes: str | None = None
    untracked: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """What the digest covers: no paths of this machine, so clones agree."""
        if self.commit is None:
            return {"type": "factory.code/v1", "repository": None, "files": dict(sorted(self.files.items()))}
        return {"type": "factory.code/v1", "repository": "git", "commit": self.commit, "changes": self.changes}

    def to_json(self) -> bytes:
        return canonical_json(self.document())

    @property
    def digest(self) -> str:
        return _sha256(self.to_json())


@dataclass(frozen=True)
class EnvironmentState:
    """Which software ran: every installed distribution and its version, and the Python."""

    python: str
    distributions: dict[str, str]

    def document(self) -> dict[str, Any]:
        return {"type": "factory.environment/v1", "python": self.python,
                "distributions": dict(sorted(self.distributions.items()))}

    def to_json(self) -> bytes:
        return canonical_json(self.document())

    @property
    def digest(self) -> str:
        return _sha256(self.to_json())


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, timeout=120).stdout


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def capture_code(root: str | os.PathLike[str] | None = None, *, entry: tuple[str | os.PathLike[str], ...] = ()) -> CodeState:
    """The code state of the working tree holding ``root`` (default: the current directory).

    ``entry``: the files that were run (a script, a config); they are what the digest
    covers when ``root`` is not inside a git repository.
    """
    start = Path(root or os.getcwd()).resolve()
    try:
        top = Path(_git(start, "rev-parse", "--show-toplevel").decode().strip())
        head = _git(top, "rev-parse", "--verify", "HEAD").decode().strip()
    except (OSError, subprocess.SubprocessError):
        files = {}
        for path in entry:
            p = Path(path).resolve()
            if p.is_file():
                files[p.name] = file_digest(p)
        log.warning("%s is not in a git repository with a commit: the code digest covers only %s",
                    start, sorted(files) or "nothing")
        return CodeState(root=str(start), commit=None, dirty=True, files=files)
    changes = hashlib.sha256()
    diff = _git(top, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
    changes.update(b"diff\0" + diff)
    untracked = [p for p in _git(top, "ls-files", "--others", "--exclude-standard", "-z").split(b"\0") if p]
    for name in sorted(untracked):
        path = top / os.fsdecode(name)
        if path.is_file() and not path.is_symlink():
            changes.update(b"\0file\0" + name + b"\0" + file_digest(path).encode())
    dirty = bool(diff) or bool(untracked)
    return CodeState(
        root=str(top),
        commit=head,
        dirty=dirty,
        changes=("sha256:" + changes.hexdigest()) if dirty else None,
        untracked=len(untracked),
    )


def capture_environment() -> EnvironmentState:
    """Every distribution importable here, by PEP 503 name, with its version.

    Where a name is installed twice, the first on ``sys.path`` is what imports, so it
    is the one recorded.
    """
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        versions.setdefault(_NORMALISE.sub("-", name).lower(), dist.version)
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return EnvironmentState(python=python, distributions=versions)
