"""What a dataset version is: ``DatasetVersion``, its artifact metadata ``DatasetMeta``,
valid dataset names and the schema summary that versions compare.

The bottom of the datasets package: ``_versions`` (``DatasetStore``) and ``_streamed``
(versions from a Ray Dataset) both build on it, and it imports neither.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from factory.errors import InvalidInputError

__all__ = ["DatasetMeta", "DatasetVersion", "check_dataset_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a named dataset, and where in Lance its rows are."""

    digest: str
    name: str
    version: int
    uri: str
    lance_version: int
    num_rows: int
    key: tuple[str, ...]
    schema: tuple[tuple[str, str], ...]
    created_at: datetime
    files: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """``name@version``, the short way to name this version on the command line."""
        return f"{self.name}@{self.version}"


class DatasetMeta(BaseModel):
    """The metadata of a ``dataset`` artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    location: str = Field(description="the Lance dataset, relative to the store home")
    lance_version: int = Field(ge=0)
    num_rows: int = Field(ge=0)
    key: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...]
    source: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] | None = Field(
        None, description="the SHA-256 of each file the Lance version reads, by path inside the Lance dataset; "
        "None for versions written before files were recorded")


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{name!r} is not a valid dataset name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _schema_of(table: pa.Table) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, str(f.type)) for f in table.schema)


def _schema_change(old: Sequence[Sequence[str]], new: Sequence[Sequence[str]]) -> list[str]:
    before, after = dict(map(tuple, old)), dict(map(tuple, new))
    changes = [f"{c} added ({after[c]})" for c in after if c not in before]
    changes += [f"{c} removed (was {before[c]})" for c in before if c not in after]
    changes += [f"{c} {before[c]} -> {after[c]}" for c in after if c in before and before[c] != after[c]]
    return changes
