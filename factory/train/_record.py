"""Everything training writes to the store about a run, behind one small surface.

The inputs (the config, the code state and the environment state) are artifacts whose
digests are the SHA-256 of their canonical JSON, stored as blobs, so the config's
artifact digest is ``TrainingConfig.digest``. The run itself, its metric series, its
checkpoints (trees) and the idempotency key live in ``store.runs`` and ``store.trees``
(INTERFACES.md, "Runs" and "Trees"). Where the store in use does not have them yet,
a run is not recorded and a finished run is recognised by its model package instead:
a ``model`` artifact whose provenance names the same config, dataset, code and
environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.store import canonical_json

if TYPE_CHECKING:
    from factory.store import Store
    from factory.train.config import TrainingConfig
    from factory.train.provenance import CodeState, EnvironmentState

__all__ = ["Inputs", "RunRecord", "record_inputs", "record_document", "candidate_ref"]

log = logging.getLogger(__name__)

RUN_KIND = "train"
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class Inputs:
    """The digests a run is made of; together they are its idempotency key."""

    config: str
    dataset: str
    code: str
    environment: str

    def parents(self) -> list[str]:
        return [self.config, self.dataset, self.code, self.environment]

    @property
    def key(self) -> str:
        body = canonical_json({"config": self.config, "code": self.code, "environment": self.environment})
        return "sha256:" + hashlib.sha256(body).hexdigest()


def record_document(store: Store, kind: str, document: bytes, *, metadata: Mapping[str, Any],
                    name: str | None = None, parents: Sequence[str] = ()) -> str:
    """Store canonical JSON as a blob and record it as a ``kind`` artifact of the same digest."""
    digest = store.blobs.put_bytes(document)
    return store.artifacts.add(kind, digest=digest, metadata=metadata, name=name, parents=parents).digest


def record_inputs(store: Store, config: TrainingConfig, code: CodeState, env: EnvironmentState) -> Inputs:
    """The config (its parent: the dataset version), code and environment as artifacts."""
    config_digest = record_document(store, "training-config", config.to_json(), name=config.name,
                                    metadata=config.model_dump(mode="json"), parents=[config.dataset])
    code_digest = record_document(store, "code", code.to_json(), metadata=code.document())
    env_digest = record_document(store, "environment", env.to_json(), metadata=env.document())
    return Inputs(config_digest, config.dataset, code_digest, env_digest)


def candidate_ref(model_name: str, digest: str) -> str:
    return f"model/{model_name}/candidates/{digest.removeprefix('sha256:')[:12]}"


def _local_copy(path: str, filesystem: Any, scratch: str) -> str:
    import pyarrow.fs as pafs

    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
        return path
    dest = tempfile.mkdtemp(prefix="factory-ckpt-", dir=scratch)
    pafs.copy_files(path, dest, source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    return dest


@dataclass
class RunRecord:
    """One training run as the store sees it: started, fed metrics and checkpoints, finished."""

    store: Store
    inputs: Inputs
    name: str
    run: Any = None                      # a store.runs Run, where the store has runs
    reused_model: str | None = None      # the package of an identical finished run
    resumed: bool = False
    checkpoints: dict[int, str] = field(default_factory=dict)   # step -> tree digest

    @classmethod
    def start(cls, store: Store, inputs: Inputs, config: TrainingConfig, *, force: bool = False,
              kind: str = RUN_KIND, parents: Sequence[str] = ()) -> RunRecord:
        """Start (or find) the run; ``force`` starts a fresh one even if an identical run finished."""
        record = cls(store, inputs, config.name)
        runs = getattr(store, "runs", None)
        if runs is None:
            if not force:
                record.reused_model = record._finished_model()
            return record
        run = runs.start(kind, config=config.model_dump(mode="json"), parents=[*inputs.parents(), *parents],
                         key=None if force else inputs.key, name=config.name)
        record.run = run
        record.resumed = bool(getattr(run, "resumed", False))
        if getattr(run, "reused", False):
            record.reused_model = run.outputs().get("model")
        return record

    def _finished_model(self) -> str | None:
        """Without runs: a model whose provenance is exactly these inputs."""
        wanted = {"training_config": self.inputs.config, "dataset": self.inputs.dataset,
                  "code": self.inputs.code, "environment": self.inputs.environment}
        for artifact in reversed(self.store.artifacts.find(kind="model", name=self.name)):
            if artifact.metadata.get("provenance") == wanted:
                return artifact.digest
        return None

    @property
    def id(self) -> str | None:
        return getattr(self.run, "id", None)

    @property
    def digest(self) -> str | None:
        return getattr(self.run, "digest", None)

    def event(self, state: str, **details: Any) -> None:
        if self.run is not None:
            self.run.event(state, **details)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.run is not None:
            self.run.log_metrics(step, dict(metrics))

    def checkpoint(self, step: int, path: str, filesystem: Any = None) -> str | None:
        """Put a checkpoint folder into the store as a tree and record it on the run; its digest."""
        trees = getattr(self.store, "trees", None)
        if trees is None or self.run is None:
            return None
        with tempfile.TemporaryDirectory(prefix="factory-ckpt-") as scratch:
            local = _local_copy(path, filesystem, scratch)
            tree = trees.put(local, name=f"{self.name}/{CHECKPOINT_PREFIX}{step:09d}", parents=[self.run.digest])
        self.run.output(f"{CHECKPOINT_PREFIX}{step:09d}", tree.digest)
        self.checkpoints[step] = tree.digest
        return tree.digest

    def resume_folders(self, dest: str | os.PathLike[str], limit: int = 3) -> list[str]:
        """The run's newest checkpoints fetched from the store into ``dest`` (for a restarted driver)."""
        trees = getattr(self.store, "trees", None)
        if trees is None or self.run is None or not self.resumed:
            return []
        recorded = sorted((n, d) for n, d in self.run.outputs().items() if n.startswith(CHECKPOINT_PREFIX))
        folders = []
        for name, digest in recorded[-limit:]:
            folders.append(str(trees.get(digest, Path(dest) / name)))
        return folders

    def finish(self, model: str, metrics: Mapping[str, float]) -> None:
        if self.run is not None:
            self.run.output("model", model)
            self.run.finish("succeeded", model=model, metrics=dict(metrics))

    def fail(self, error: BaseException) -> None:
        if self.run is not None:
            self.run.finish("failed", error=f"{type(error).__name__}: {error}")

    def register_candidate(self, digest: str) -> str:
        """Point ``model/<name>/candidates/<digest12>`` at the package; the ref's name."""
        ref = candidate_ref(self.name, digest)
        current = self.store.refs.get(ref)
        if current != digest:
            self.store.refs.set(ref, digest, expected=current, reason=f"trained by run {self.id or '-'}")
        return ref
