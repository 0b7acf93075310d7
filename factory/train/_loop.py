"""The training loop every Ray Train worker runs.

It builds the model from the registry with the config's seed, reads its rows (see
``_data``), resumes from the newest checkpoint that verifies (Ray's latest, the ones
beside it, and the trees a resumed run recorded in the store), and trains epoch by epoch. Every
rank reports after every epoch (Ray's report is a barrier); checkpoints carry the model,
the optimiser, each rank's generator state and the position in the data, so a resumed
run takes exactly the steps the uninterrupted one would have taken.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import factory.train._checkpoint as ckpt
import factory.train._data as _data

if TYPE_CHECKING:
    import torch

    from factory.train._strategies import Strategy
    from factory.train.config import TrainingConfig

__all__ = ["LoopSpec", "train_loop", "metric_names"]

log = logging.getLogger(__name__)

_EVAL_BATCH = 4096


@dataclass(frozen=True)
class LoopSpec:
    """Everything a worker needs, as plain values (the config travels as its JSON)."""

    config_json: bytes
    data: _data.DataSpec
    task: Literal["classification", "regression"]
    steps_per_epoch: int
    stored: ckpt.StoredCheckpoints | None = None  # the checkpoint trees of the run being resumed

    @property
    def config(self) -> TrainingConfig:
        from factory.train.config import TrainingConfig

        return TrainingConfig.model_validate_json(self.config_json)


def metric_names(task: str, validation: bool) -> tuple[str, ...]:
    names = ["train_loss"]
    if validation:
        names += ["val_loss", "val_accuracy" if task == "classification" else "val_rmse"]
    return tuple(names)


def _loss(task: str, out: dict[str, torch.Tensor], y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    import torch.nn.functional as F

    if task == "classification":
        return F.nll_loss(out["probabilities"].clamp_min(1e-12).log(), y, reduction=reduction)
    return F.mse_loss(out["prediction"].squeeze(1), y, reduction=reduction)


def _seed_generators(seed: int, rank: int) -> None:
    import torch

    state = np.random.SeedSequence([seed, 0x7A, rank]).generate_state(1, dtype=np.uint64)[0]
    torch.manual_seed(int(state))


def _all_sum(values: list[float], device: Any, world: int) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.cpu().tolist()


def _evaluate(strategy: Strategy, spec: LoopSpec, rows: _data.Rows, val: np.ndarray,
              rank: int, world: int, device: Any) -> dict[str, float]:
    """Validation metrics over every rank's equal share (equal, so collective forwards line up)."""
    import torch

    val = val[: len(val) - len(val) % world]
    if len(val) == 0:
        return {}
    mine = _data.rank_share(val, rank, world)
    loss_sum, score = 0.0, 0.0
    strategy.train(False)
    with torch.no_grad():
        for start in range(0, len(mine), _EVAL_BATCH):
            index = mine[start:start + _EVAL_BATCH]
            x = torch.from_numpy(rows.x[index]).to(device)
            y = torch.from_numpy(rows.y[index]).to(device)
            out = strategy.forward(x)
            loss_sum += float(_loss(spec.task, out, y, reduction="sum"))
            if spec.task == "classification":
                score += float((out["probabilities"].argmax(dim=1) == y).sum())
    strategy.train(True)
    loss_sum, score, count = _all_sum([loss_sum, score, float(len(mine))], device, world)
    if spec.task == "classification":
        return {"val_loss": loss_sum / count, "val_accuracy": score / count}
    return {"val_loss": loss_sum / count, "val_rmse": math.sqrt(loss_sum / count)}


def _run_folder(context: Any) -> tuple[str, Any] | None:
    """The run's own folder in Ray Train's storage and its filesystem, where Ray says (a developer API)."""
    try:
        storage = context.get_storage()
        return storage.experiment_fs_path, storage.storage_filesystem
    except Exception as exc:  # an extra place to look, never a reason to fail
        log.debug("Ray Train did not say where the run's storage is: %s", exc)
        return None


def _candidates(spec: LoopSpec) -> list[ckpt.Candidate]:
    """Every checkpoint this run could resume from, best first.

    Ray's latest checkpoint and every ``checkpoint-<step>`` folder of the run: a worker
    killed after every rank wrote a checkpoint but before the controller took the
    report leaves a whole checkpoint that Ray never registered, and it verifies as
    well as any. Then the trees of a resumed run recorded in the store.
    """
    import ray.train

    found = spec.stored.candidates() if spec.stored is not None else []
    latest = ray.train.get_checkpoint()
    if latest is not None:
        found += ckpt.siblings(latest.path, latest.filesystem)
    run = _run_folder(ray.train.get_context())
    if run is not None:
        seen = {c.path.rstrip("/") for c in found if c.store is None}
        found += [c for c in ckpt.listing(*run) if c.path.rstrip("/") not in seen]
    return ckpt.order_candidates(found)


def _fetch(candidate: ckpt.Candidate, scratch: str, world: int) -> tuple[Path | None, str | None]:
    """A local copy of the candidate and ``None``, or ``None`` and why it cannot be used."""
    from factory.errors import FactoryError

    try:
        local = ckpt.materialize(candidate, scratch)
    except (FactoryError, OSError) as exc:
        return None, f"cannot be read ({exc})"
    return local, ckpt.verify(local, world)


def _restore(strategy: Strategy, spec: LoopSpec, rank: int, world: int, device: Any,
             scratch: str) -> tuple[ckpt.TrainState | None, float, list[tuple[int, str]]]:
    """Load the newest checkpoint that verifies; rank 0 chooses, every rank loads the same one."""
    import torch.distributed as dist

    choice: list[Any] = [None, []]
    local = None
    if rank == 0:
        for candidate in _candidates(spec):
            local, problem = _fetch(candidate, scratch, world)
            if problem is None:
                choice[0] = candidate
                break
            log.warning("skipping checkpoint %s: %s", candidate.where, problem)
            choice[1].append((candidate.step, problem))
    if world > 1:
        dist.broadcast_object_list(choice, src=0)
    chosen, skipped = choice
    if chosen is None:
        return None, 0.0, skipped
    if rank != 0:
        local, problem = _fetch(chosen, scratch, world)
        if problem is not None:
            raise RuntimeError(f"checkpoint {chosen.where} {problem} on rank {rank}, though rank 0 read it whole")
    strategy.load(local)
    loss_sum = ckpt.load_rank_state(local, rank, device)
    return ckpt.TrainState.from_json((local / ckpt.STATE_FILE).read_bytes()), loss_sum, skipped


def _report(strategy: Strategy, state: ckpt.TrainState, metrics: dict[str, float], *, with_checkpoint: bool,
            loss_sum: float, rank: int, world: int, device: Any) -> None:
    import ray.train

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    full = strategy.full_state()
    with tempfile.TemporaryDirectory(prefix="factory-ckpt-") as tmp:
        folder = Path(tmp)
        files = strategy.save(folder)
        files.append(ckpt.save_rank_state(folder, rank, device, loss_sum))
        if rank == 0:
            from safetensors.torch import save_file

            save_file(full, str(folder / ckpt.MODEL_FILE))
            (folder / ckpt.STATE_FILE).write_bytes(state.to_json())
            files += [ckpt.MODEL_FILE, ckpt.STATE_FILE]
        ckpt.write_manifest(folder, rank, world, files)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=ckpt.checkpoint_name(state.step))


def _deterministic_kernels(torch: Any) -> None:
    """Deterministic kernels wherever torch has a choice (warning where it has none).

    ``torch.use_deterministic_algorithms`` also sets the flag in inductor's config, and
    importing that config loads sympy and some 800 modules: seconds of every worker's
    start-up. Nothing here compiles with inductor, so the kernel flag is set alone.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def _device() -> Any:
    import ray.train.torch
    import torch

    if torch.cuda.is_available():
        return ray.train.torch.get_device()
    return torch.device("cpu")


def train_loop(loop_config: dict[str, Any]) -> None:
    """The per-worker entry point given to ``TorchTrainer``: ``{"spec": LoopSpec}``."""
    import ray.train
    import torch

    from factory.contract import default_registry
    from factory.train._strategies import make_strategy

    spec: LoopSpec = loop_config["spec"]
    config = spec.config
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = _device()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(max(1, int(config.compute.cpus_per_worker)))
    _deterministic_kernels(torch)
    _seed_generators(config.seed, rank)

    rows = _data.load_rows(spec.data)
    train_idx, val_idx = _data.split(len(rows), config.hyperparameters.validation_fraction, config.seed)
    arch = default_registry().get(config.architecture_name, config.architecture_version)
    strategy = make_strategy(arch.build(config.architecture_config, seed=config.seed), config, rank, world, device)
    batch = config.hyperparameters.batch_size
    policy = config.checkpoint

    with tempfile.TemporaryDirectory(prefix="factory-restore-") as scratch:
        state, restored_loss, skipped = _restore(strategy, spec, rank, world, device, scratch)
    extra: dict[str, float] = {}
    if state is not None:
        extra["resumed_from_step"] = float(state.step)
    if skipped:
        extra["skipped_checkpoints"] = float(len(skipped))
    state = state or ckpt.TrainState(world_size=world, strategy=strategy.name)
    # This rank's sum of its batch losses in the current epoch, kept on the device (no sync per step).
    loss_sum = torch.tensor(restored_loss, dtype=torch.float64, device=device)
    strategy.train(True)

    def report(metrics: dict[str, float], with_checkpoint: bool) -> None:
        nonlocal extra
        _report(strategy, state, {**metrics, **extra}, with_checkpoint=with_checkpoint, loss_sum=float(loss_sum),
                rank=rank, world=world, device=device)
        extra = {}

    finished_before = state.epoch >= config.epochs
    for epoch in range(state.epoch, config.epochs):
        order = _data.epoch_order(train_idx, epoch, config.seed)
        for s in range(state.step_in_epoch, spec.steps_per_epoch):
            index = _data.batch_slice(order, s, batch, rank, world)
            x = torch.from_numpy(rows.x[index]).to(device)
            y = torch.from_numpy(rows.y[index]).to(device)
            loss = _loss(spec.task, strategy.forward(x), y)
            strategy.step(loss)
            loss_sum += loss.detach()
            state.step += 1
            state.step_in_epoch = s + 1
            if s + 1 < spec.steps_per_epoch and policy.every_steps and state.step % policy.every_steps == 0:
                report({"epoch": float(epoch), "step": float(state.step)}, with_checkpoint=True)
        (total,) = _all_sum([float(loss_sum)], device, world)
        metrics = {"train_loss": total / world / spec.steps_per_epoch}
        metrics.update(_evaluate(strategy, spec, rows, val_idx, rank, world, device))
        state.history.append({"epoch": float(epoch + 1), **metrics})
        state.epoch, state.step_in_epoch = epoch + 1, 0
        loss_sum.zero_()
        if policy.every_steps:
            due = state.step % policy.every_steps == 0
        else:
            due = state.epoch % policy.every_epochs == 0
        report({"epoch": float(state.epoch), "step": float(state.step), **metrics},
               with_checkpoint=due or state.epoch == config.epochs)
    if finished_before:
        # Resumed from the final checkpoint: report it again, so this attempt ends on it too.
        final = {k: v for k, v in state.history[-1].items() if k != "epoch"} if state.history else {}
        report({"epoch": float(state.epoch), "step": float(state.step), **final}, with_checkpoint=True)
