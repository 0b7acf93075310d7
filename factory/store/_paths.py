"""Local paths that something is about to be written to: refused early when the write would fail."""

from __future__ import annotations

import os
from pathlib import Path

from factory.errors import InvalidInputError

__all__ = ["check_output_path"]


def check_output_path(path: str | os.PathLike[str], *, folder: bool = False) -> Path:
    """``path`` as a ``Path``, once it is known that a file (or, with ``folder``, a folder) can go there.

    Refused with ``InvalidInputError``: a file path that is an existing folder, a folder
    path that is an existing file, and any path below an existing file.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InvalidInputError(f"{path} exists and is not a folder: give a new or empty folder")
    if not folder and path.is_dir():
        raise InvalidInputError(f"{path} is a folder: give the path of a file to write")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InvalidInputError(f"cannot write {path}: {parent} is not a folder; choose another path")
            break
    return path
