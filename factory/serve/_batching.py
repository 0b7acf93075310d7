"""Run a batch of checked requests: one forward pass per version and input layout.

Ray Serve's ``serve.batch`` hands the replica the requests that arrived together
(bounded by rows, not requests); this module groups them by version and by the sizes
of their variable dimensions, concatenates each group's rows up to that version's
``max_batch_size``, runs the model once per chunk and splits the outputs back per
request. A model failure fails only the requests of its chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from factory.errors import ContractViolationError

if TYPE_CHECKING:
    import numpy as np

    from factory.serve._versions import LoadedVersion

__all__ = ["Job", "run_jobs", "rows_of"]

Outputs = dict[str, "np.ndarray"]


@dataclass(frozen=True, eq=False)
class Job:
    """One checked request for one version."""

    version: LoadedVersion
    inputs: Mapping[str, np.ndarray]
    rows: int


def rows_of(jobs: Sequence[Job]) -> int:
    """The batch size ``serve.batch`` bounds: rows, not requests."""
    return sum(job.rows for job in jobs)


def run_jobs(jobs: Sequence[Job]) -> list[Outputs | BaseException]:
    """Each job's outputs as arrays, or the exception its chunk raised, in job order."""
    groups: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        layout = tuple(array.shape[1:] for array in job.inputs.values())
        groups.setdefault((id(job.version), layout), []).append(index)
    results: list[Outputs | BaseException] = [None] * len(jobs)  # type: ignore[list-item]
    for indexes in groups.values():
        for chunk in _chunks([jobs[i] for i in indexes], indexes):
            try:
                outputs = _run(chunk)
            except Exception as exc:  # a model failure answers its own requests, never the replica
                outputs = [exc] * len(chunk)
            for (index, _), out in zip(chunk, outputs, strict=True):
                results[index] = out
    return results


def _chunks(jobs: list[Job], indexes: list[int]) -> list[list[tuple[int, Job]]]:
    limit = jobs[0].version.contract.resources.max_batch_size
    chunks: list[list[tuple[int, Job]]] = [[]]
    rows = 0
    for index, job in zip(indexes, jobs, strict=True):
        if chunks[-1] and rows + job.rows > limit:
            chunks.append([])
            rows = 0
        chunks[-1].append((index, job))
        rows += job.rows
    return chunks


def _run(chunk: list[tuple[int, Job]]) -> list[Outputs]:
    import numpy as np

    jobs = [job for _, job in chunk]
    version = jobs[0].version
    if len(jobs) == 1:
        inputs = dict(jobs[0].inputs)
    else:
        inputs = {}
        for name in jobs[0].inputs:
            parts = [job.inputs[name] for job in jobs]
            join = np.ma.concatenate if any(isinstance(p, np.ma.MaskedArray) for p in parts) else np.concatenate
            inputs[name] = join(parts)
    raw = version.model.predict(inputs)
    total = sum(job.rows for job in jobs)
    arrays = {}
    for name, tensor in raw.items():
        array = tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)
        if array.ndim == 0 or array.shape[0] != total:
            raise ContractViolationError(f"version {version.version} returned {name!r} shaped {list(array.shape)} "
                                         f"for {total} rows: its outputs must have one row per input row")
        arrays[name] = array
    if len(jobs) == 1:
        return [arrays]
    bounds = np.cumsum([job.rows for job in jobs])[:-1]
    split = {name: np.split(array, bounds) for name, array in arrays.items()}
    return [{name: parts[i] for name, parts in split.items()} for i in range(len(jobs))]
