"""Training checkpoints: what each worker writes, how a checkpoint proves it is whole, which to resume.

A checkpoint is a folder ``checkpoint-<step>`` that every worker contributes to (Ray
Train merges the workers' folders in storage). Worker ``r`` writes its own files and
then ``MANIFEST-rank<r>.json``, naming each file it wrote with its SHA-256 and the
world size. A checkpoint verifies when the manifests of every rank are there and every
file they name hashes to its digest, so a partial upload, a lost worker's missing
share or a flipped byte all fail. Resuming takes the newest checkpoint that verifies.

Rank 0 always writes ``model.safetensors`` (the full weights) and ``state.json`` (where
training stands: epoch, step, the running sums of the epoch, the metric history); each
rank writes ``rank<r>.safetensors`` (its torch generator states and its running loss).

Checkpoints to resume from come from two places: Ray Train's storage (the run's own
folder, restored by rerunning with the same name) and the store, where the driver put
each recorded checkpoint as a tree (``StoredCheckpoints``: the workers fetch them
directly, since the driver's disk is not theirs). A tree is verified file by file as it
is fetched, and then the manifests are checked as for any other copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.train.provenance import file_digest

__all__ = [
    "FORMAT",
    "MODEL_FILE",
    "STATE_FILE",
    "TrainState",
    "Candidate",
    "StoredCheckpoints",
    "checkpoint_name",
    "step_of",
    "write_manifest",
    "verify",
    "save_rank_state",
    "load_rank_state",
    "flatten_optimizer",
    "unflatten_optimizer",
    "listing",
    "siblings",
    "newest_good",
    "materialize",
    "order_candidates",
]

log = logging.getLogger(__name__)

FORMAT = "factory.checkpoint/v1"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"
_MANIFEST = "MANIFEST-rank{rank}.json"
_MANIFEST_RE = re.compile(r"^MANIFEST-rank(\d+)\.json$")
_NAME_RE = re.compile(r"^checkpoint-(\d{9,})$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:09d}"


def step_of(name: str) -> int | None:
    match = _NAME_RE.match(os.path.basename(name.rstrip("/")))
    return int(match.group(1)) if match else None


@dataclass
class TrainState:
    """Where training stands; rank 0 writes it into every checkpoint as ``state.json``."""

    epoch: int = 0                 # completed epochs
    step: int = 0                  # optimiser steps taken in all
    step_in_epoch: int = 0         # steps taken in the current epoch
    history: list[dict[str, float]] = field(default_factory=list)
    world_size: int = 1
    strategy: str = "ddp"

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, **self.__dict__}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TrainState:
        raw = json.loads(data)
        if raw.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} state")
        return cls(**raw)


def write_manifest(folder: str | os.PathLike[str], rank: int, world_size: int, files: Iterable[str]) -> Path:
    """Record this rank's files with their digests; written last, so its presence means the rest is there."""
    root = Path(folder)
    entries = {rel: file_digest(root / rel) for rel in sorted(set(files))}
    path = root / _MANIFEST.format(rank=rank)
    body = {"format": FORMAT, "rank": rank, "world_size": world_size, "files": entries}
    path.write_text(json.dumps(body, sort_keys=True, indent=1))
    return path


def verify(folder: str | os.PathLike[str], world_size: int | None = None) -> str | None:
    """``None`` if the checkpoint at ``folder`` is whole, else why not."""
    root = Path(folder)
    if not root.is_dir():
        return "no such folder"
    manifests: dict[int, dict[str, Any]] = {}
    for entry in root.iterdir():
        match = _MANIFEST_RE.match(entry.name)
        if match:
            try:
                manifests[int(match.group(1))] = json.loads(entry.read_text())
            except (OSError, ValueError) as exc:
                return f"{entry.name} is unreadable ({exc})"
    if not manifests:
        return "no manifest: the checkpoint was never finished"
    worlds = {m.get("world_size") for m in manifests.values()}
    if len(worlds) != 1:
        return f"manifests disagree on the world size ({sorted(map(str, worlds))})"
    world = worlds.pop()
    if world_size is not None and world != world_size:
        return f"written by {world} workers; this job has {world_size}"
    missing = sorted(set(range(world)) - set(manifests))
    if missing:
        return f"rank(s) {missing} never finished their share"
    for rank, manifest in sorted(manifests.items()):
        if manifest.get("format") != FORMAT:
            return f"rank {rank}'s manifest is not {FORMAT}"
        for rel, digest in sorted(manifest.get("files", {}).items()):
            path = root / rel
            if not path.is_file():
                return f"{rel} (rank {rank}) is missing"
            if file_digest(path) != digest:
                return f"{rel} (rank {rank}) does not match its digest"
    if 0 not in manifests or STATE_FILE not in manifests[0].get("files", {}):
        return f"rank 0 wrote no {STATE_FILE}"
    return None


# -- tensors without pickles ------------------------------------------------------------


def save_rank_state(folder: Path, rank: int, device: Any, loss_sum: float) -> str:
    """Write what is private to this rank (generator states, its running loss); returns the file's name."""
    import torch
    from safetensors.torch import save_file

    tensors = {"cpu_rng": torch.get_rng_state(), "loss_sum": torch.tensor([loss_sum], dtype=torch.float64)}
    if getattr(device, "type", "cpu") == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(device)
    name = f"rank{rank}.safetensors"
    save_file(tensors, str(folder / name))
    return name


def load_rank_state(folder: Path, rank: int, device: Any) -> float:
    """Restore this rank's generator states; returns its running loss."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / f"rank{rank}.safetensors"))
    torch.set_rng_state(tensors["cpu_rng"])
    if "cuda_rng" in tensors and getattr(device, "type", "cpu") == "cuda":
        torch.cuda.set_rng_state(tensors["cuda_rng"], device)
    return float(tensors["loss_sum"][0])


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer ``state_dict`` as (tensors by name, JSON for the rest), so no pickle is needed."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["plain"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# -- finding and fetching checkpoints ----------------------------------------------------


@dataclass(frozen=True)
class StoredCheckpoints:
    """A run's checkpoint trees in the store, and how a worker opens the store to fetch them.

    ``points``: ``(step, tree digest)``, newest first. ``settings`` travel with them, so
    a worker reaches a remote home with the driver's endpoint and credentials.
    """

    home: str
    settings: Any
    points: tuple[tuple[int, str], ...] = ()

    def candidates(self) -> list[Candidate]:
        return [Candidate(tree, step, store=self) for step, tree in self.points]

    def fetch(self, tree: str, dest: Path) -> Path:
        """The tree's files under ``dest``, each verified against its digest as it is written."""
        from factory.store import Store

        return Store(self.home, settings=self.settings).trees.get(tree, dest)


@dataclass(frozen=True)
class Candidate:
    """A checkpoint to try: a folder on a ``pyarrow.fs`` filesystem (``None``: local disk),
    or, with ``store``, the tree whose digest is ``path``."""

    path: str
    step: int
    filesystem: Any = None
    store: StoredCheckpoints | None = None

    @property
    def where(self) -> str:
        return f"tree {self.path} in the store" if self.store is not None else self.path


def listing(folder: str, filesystem: Any) -> list[Candidate]:
    """Every ``checkpoint-<step>`` folder in ``folder`` of ``filesystem``, newest first."""
    import pyarrow.fs as pafs

    try:
        infos = filesystem.get_file_info(pafs.FileSelector(folder.rstrip("/"), allow_not_found=True))
    except OSError as exc:
        log.warning("cannot list checkpoints in %s: %s", folder, exc)
        return []
    found = [Candidate(info.path, step_of(info.base_name), filesystem) for info in infos
             if step_of(info.base_name) is not None and info.type == pafs.FileType.Directory]
    return sorted(found, key=lambda c: c.step, reverse=True)


def siblings(path: str, filesystem: Any) -> list[Candidate]:
    """Every ``checkpoint-<step>`` folder beside ``path`` (itself included), newest first."""
    found = listing(path.rstrip("/").rsplit("/", 1)[0], filesystem)
    if not any(c.path.rstrip("/") == path.rstrip("/") for c in found):
        step = step_of(path)
        found.append(Candidate(path, step if step is not None else -1, filesystem))
    return sorted(found, key=lambda c: c.step, reverse=True)


@contextlib.contextmanager
def newest_good(folder: str, world: int) -> Iterator[tuple[Path, str] | None]:
    """The newest checkpoint in ``folder`` (a path or URI) that verifies: (a local copy, where it is); or ``None``."""
    import pyarrow.fs as pafs

    if "://" in folder:
        filesystem, root = pafs.FileSystem.from_uri(folder)
    else:
        filesystem, root = pafs.LocalFileSystem(), os.path.abspath(folder)
    with tempfile.TemporaryDirectory(prefix="factory-ckpt-") as scratch:
        for candidate in listing(root, filesystem):
            local = materialize(candidate, scratch)
            problem = verify(local, world)
            if problem is None:
                yield local, candidate.path
                return
            log.warning("skipping checkpoint %s: %s", candidate.path, problem)
        yield None


def materialize(candidate: Candidate, scratch: str | os.PathLike[str]) -> Path:
    """A local folder holding the candidate's files (the folder itself when it is local).

    Raises ``CorruptBlobError`` or ``NotFoundError`` for a tree whose files do not
    match their digests or are gone, and ``OSError`` for storage that cannot be read.
    """
    import pyarrow.fs as pafs

    if candidate.store is not None:
        dest = Path(tempfile.mkdtemp(prefix="tree-", dir=scratch)) / checkpoint_name(candidate.step)
        return candidate.store.fetch(candidate.path, dest)
    if candidate.filesystem is None or isinstance(candidate.filesystem, pafs.LocalFileSystem):
        return Path(candidate.path)
    dest = Path(tempfile.mkdtemp(prefix="ckpt-", dir=scratch))
    pafs.copy_files(candidate.path, str(dest), source_filesystem=candidate.filesystem,
                    destination_filesystem=pafs.LocalFileSystem())
    return dest


def order_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Newest first; of two copies of one step, Ray's storage (already a folder) before the
    store's tree, which is still there to fall back on if the first does not verify."""
    return sorted(candidates, key=lambda c: (-c.step, c.store is not None))
