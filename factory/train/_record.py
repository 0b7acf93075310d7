"""Everything training writes to the store about a run, behind one small surface.

The inputs (the config, the code state and the environment state) are artifacts whose
digests are the SHA-256 of their canonical JSON, stored as blobs, so the config's
artifact digest is ``TrainingConfig.digest``. The run itself lives in ``store.runs``:
its idempotency key is the config, code and environment digests together, so the same
config on the same code and environment finds the finished run (``reused``) or takes
over an interrupted one (``resumed``). Its metric series has one point per epoch, its
checkpoints are trees in ``store.trees`` recorded as the outputs ``checkpoint-<step>``,
and its package is the output ``model``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory.errors import FactorySystemError
from factory.store import canonical_json

if TYPE_CHECKING:
    from factory.store import Run, Store
    from factory.train.config import TrainingConfig
    from factory.train.provenance import CodeState, EnvironmentState

__all__ = ["Inputs", "RunRecord", "record_inputs", "record_config", "record_code_environment", "record_document",
           "candidate_ref", "checkpoint_output", "recorded_checkpoints", "RUN_KIND"]

log = logging.getLogger(__name__)

RUN_KIND = "train"
CHECKPOINT_PREFIX = "checkpoint-"
MODEL_OUTPUT = "model"


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


def record_config(store: Store, config: TrainingConfig) -> str:
    """The config as a ``training-config`` artifact whose parent is its dataset version."""
    return record_document(store, "training-config", config.to_json(), name=config.name,
                           metadata=config.model_dump(mode="json"), parents=[config.dataset])


def record_code_environment(store: Store, code: CodeState, env: EnvironmentState) -> tuple[str, str]:
    """The code and environment states as ``code`` and ``environment`` artifacts; their digests."""
    return (record_document(store, "code", code.to_json(), metadata=code.document()),
            record_document(store, "environment", env.to_json(), metadata=env.document()))


def record_inputs(store: Store, config: TrainingConfig, code: CodeState, env: EnvironmentState) -> Inputs:
    """The config (its parent: the dataset version), code and environment as artifacts."""
    code_digest, env_digest = record_code_environment(store, code, env)
    return Inputs(record_config(store, config), config.dataset, code_digest, env_digest)


def candidate_ref(model_name: str, digest: str) -> str:
    return f"model/{model_name}/candidates/{digest.removeprefix('sha256:')[:12]}"


def checkpoint_output(step: int) -> str:
    """The run output naming the checkpoint taken after ``step`` optimiser steps."""
    return f"{CHECKPOINT_PREFIX}{step:09d}"


def recorded_checkpoints(outputs: Mapping[str, str]) -> dict[int, str]:
    """step -> tree digest of the checkpoints among a run's outputs."""
    found = {}
    for name, digest in outputs.items():
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit():
            found[int(name[len(CHECKPOINT_PREFIX):])] = digest
    return found


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
    run: Run
    checkpoints: dict[int, str] = field(default_factory=dict)   # step -> tree digest
    logged_epoch: float = 0.0                                    # the last epoch in the metric series

    @classmethod
    def start(cls, store: Store, inputs: Inputs, config: TrainingConfig, *, force: bool = False,
              kind: str = RUN_KIND, parents: Sequence[str] = ()) -> RunRecord:
        """Start the run, or find it by its key: finished (``reused``) or interrupted (``resumed``).

        ``force`` starts a fresh run without a key, whatever ran before; ``parents`` are
        added to the inputs (a sweep's run, for a trial).
        """
        run = store.runs.start(kind, config=config.model_dump(mode="json"), parents=[*inputs.parents(), *parents],
                               key=None if force else inputs.key, name=config.name)
        return cls.adopt(store, inputs, config, run)

    @classmethod
    def adopt(cls, store: Store, inputs: Inputs, config: TrainingConfig, run: Run) -> RunRecord:
        """A record around a run already started (or found): what it has recorded is read back."""
        record = cls(store, inputs, config.name, run)
        if run.resumed or run.reused:
            record.checkpoints = recorded_checkpoints(run.outputs())
            epochs = [m.value for m in run.metrics() if m.name == "epoch"]
            record.logged_epoch = max(epochs, default=0.0)
        return record

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def digest(self) -> str:
        return self.run.digest

    @property
    def reused(self) -> bool:
        return bool(self.run.reused)

    @property
    def resumed(self) -> bool:
        return bool(self.run.resumed)

    def reused_model(self) -> str:
        """The package of the finished run this one reuses."""
        model = self.run.outputs().get(MODEL_OUTPUT)
        if model is None:
            raise FactorySystemError(
                f"run {self.id} succeeded without recording its package: train again with --force"
            )
        return model

    def event(self, state: str, **details: Any) -> None:
        self.run.event(state, **details)

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Record an epoch's metrics (``metrics["epoch"]``) unless that epoch is in the series already.

        A resumed run trains again from its checkpoint, and an epoch it had finished
        before reports again: the record keeps the first, so each epoch appears once.
        """
        epoch = float(metrics.get("epoch", 0.0))
        if epoch <= self.logged_epoch:
            return False
        self.run.log_metrics(step, {k: float(v) for k, v in metrics.items() if k != "step"})
        self.logged_epoch = epoch
        return True

    def log_history(self, tree: str, steps_per_epoch: int) -> None:
        """Record the epochs of a checkpoint's history that the series lacks.

        A worker killed after a checkpoint was written but before Ray took its report
        loses that report: the restarted workers resume from the checkpoint, and the
        epochs it holds reach the record only through its ``state.json``.
        """
        from factory.train._checkpoint import STATE_FILE, TrainState

        state = TrainState.from_json(self.store.trees.read_bytes(tree, STATE_FILE))
        for entry in state.history:
            self.log_epoch(int(entry["epoch"]) * steps_per_epoch, entry)

    def checkpoint(self, step: int, path: str, filesystem: Any = None) -> str:
        """Put a checkpoint folder into the store as a tree, record it on the run; the tree's digest."""
        known = self.checkpoints.get(step)
        if known is not None:
            return known
        name = checkpoint_output(step)
        with tempfile.TemporaryDirectory(prefix="factory-ckpt-") as scratch:
            local = _local_copy(path, filesystem, scratch)
            tree = self.store.trees.put(local, name=f"{self.name}/{name}", parents=[self.run.digest])
        self.run.output(name, tree.digest)
        self.checkpoints[step] = tree.digest
        return tree.digest

    def resume_points(self, limit: int = 3) -> list[tuple[int, str]]:
        """The run's newest recorded checkpoints, ``(step, tree digest)`` newest first (for a resumed run)."""
        return sorted(self.checkpoints.items(), reverse=True)[:limit] if self.resumed else []

    def finish(self, model: str, metrics: Mapping[str, float], **details: Any) -> None:
        self.run.output(MODEL_OUTPUT, model)
        self.run.finish("succeeded", model=model, metrics=dict(metrics), **details)

    def fail(self, error: BaseException) -> None:
        state = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
        try:
            self.run.finish(state, error=f"{type(error).__name__}: {error}"[:2000])
        except Exception:  # the original error matters more than a failed record of it
            log.exception("could not record the failure of run %s", self.id)

    def register_candidate(self, digest: str) -> str:
        """Point ``model/<name>/candidates/<digest12>`` at the package; the ref's name."""
        ref = candidate_ref(self.name, digest)
        current = self.store.refs.get(ref)
        if current != digest:
            self.store.refs.set(ref, digest, expected=current, reason=f"trained by run {self.id}")
        return ref
