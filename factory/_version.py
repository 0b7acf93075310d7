"""The code version stamped on every artifact: the package version and, in a git
checkout, the commit it runs from (read from ``.git`` directly; no subprocess)."""

from __future__ import annotations

import functools
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def code_version() -> str:
    commit = _git_commit(Path(__file__).resolve().parent.parent)
    return f"factory/{__version__}" + (f"+g{commit[:12]}" if commit else "")


def _git_commit(top: Path) -> str | None:
    git = top / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip()
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None
