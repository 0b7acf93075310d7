"""How workers share a step: DDP, or DeepSpeed with a ZeRO stage. One small interface, two engines.

Both take the same module, optimiser settings and batches, and both write checkpoints
whose ``model.safetensors`` holds the full weights (rank 0), so packaging never depends
on the strategy. DDP saves the optimiser as safetensors plus JSON; DeepSpeed saves
through its own sharded checkpoint (``deepspeed/<tag>/``: the model states and one
optimiser shard per rank) and loads back through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import factory.train._checkpoint as ckpt

if TYPE_CHECKING:
    import torch
    from torch import nn

    from factory.train.config import Hyperparameters, TrainingConfig

__all__ = ["Strategy", "DDP", "DeepSpeed", "make_strategy", "deepspeed_config"]

_DS_FOLDER = "deepspeed"
_DS_TAG = "state"


def _torch_optimizer(params: Any, hp: Hyperparameters) -> torch.optim.Optimizer:
    import torch

    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    # foreach=False: one code path whatever the parameter count, so results do not depend on it.
    return cls(params, lr=hp.lr, weight_decay=hp.weight_decay, foreach=False)


class Strategy:
    """A wrapped module and its optimiser: step, evaluate, save, load."""

    name = "base"

    def __init__(self, module: nn.Module, config: TrainingConfig, rank: int, world: int, device: Any):
        self.config = config
        self.rank = rank
        self.world = world
        self.device = device
        self.module = module

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def train(self, mode: bool = True) -> None:
        raise NotImplementedError

    def save(self, folder: Path) -> list[str]:
        """Write this rank's share into ``folder``; the relative paths written."""
        raise NotImplementedError

    def load(self, folder: Path) -> None:
        raise NotImplementedError

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """The full weights on rank 0 (``None`` elsewhere); every rank must call it."""
        raise NotImplementedError


class DDP(Strategy):
    """PyTorch DistributedDataParallel (the plain module when there is one worker)."""

    name = "ddp"

    def __init__(self, module: nn.Module, config: TrainingConfig, rank: int, world: int, device: Any):
        import torch

        super().__init__(module.to(device), config, rank, world, device)
        self.wrapped: nn.Module = self.module
        if world > 1:
            ids = [device] if device.type == "cuda" else None
            self.wrapped = torch.nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.optimizer = _torch_optimizer(self.module.parameters(), config.hyperparameters)

    def forward(self, x):
        return self.wrapped(x)

    def step(self, loss):
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.hyperparameters.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.hyperparameters.grad_clip)
        self.optimizer.step()

    def train(self, mode=True):
        self.module.train(mode)

    def full_state(self):
        if self.rank:
            return None
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def save(self, folder):
        import json

        from safetensors.torch import save_file

        if self.rank:
            return []
        tensors, meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        save_file(tensors, str(folder / "optimizer.safetensors"))
        (folder / "optimizer.json").write_text(json.dumps(meta, sort_keys=True))
        return ["optimizer.safetensors", "optimizer.json"]

    def load(self, folder):
        import json

        from safetensors.torch import load_file

        weights = load_file(str(folder / ckpt.MODEL_FILE), device=str(self.device))
        self.module.load_state_dict(weights, strict=True)
        tensors = load_file(str(folder / "optimizer.safetensors"), device=str(self.device))
        meta = json.loads((folder / "optimizer.json").read_text())
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta))


# DeepSpeed's default gradient bucket (elements). ZeRO-1/2 allocate and free their reduce
# buckets at every step, so a bucket far larger than the model costs more than the step on CPU.
_DS_BUCKET = 500_000_000


def deepspeed_config(config: TrainingConfig, world: int, parameters: int | None = None) -> dict[str, Any]:
    """The DeepSpeed config for a training config: its batch split, optimiser, ZeRO stage and clipping.

    With the model's ``parameters`` (a count) the reduce and all-gather buckets are no larger than
    the model: one bucket per step, not two 2 GB buffers made and freed for a small model.
    """
    hp = config.hyperparameters
    zero: dict[str, Any] = {"stage": config.strategy.zero_stage}
    if parameters is not None:
        bucket = max(1, min(_DS_BUCKET, parameters))
        zero.update(reduce_bucket_size=bucket, allgather_bucket_size=bucket)
    out: dict[str, Any] = {
        "train_batch_size": hp.batch_size,
        "train_micro_batch_size_per_gpu": hp.batch_size // world,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "gradient_clipping": hp.grad_clip or 0.0,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if hp.optimizer == "sgd":
        out["zero_allow_untested_optimizer"] = True
    else:
        # torch_adam: PyTorch's own Adam, so nothing is compiled on CPU or on a GPU without nvcc.
        out["optimizer"] = {
            "type": "AdamW" if hp.optimizer == "adamw" else "Adam",
            "params": {"lr": hp.lr, "weight_decay": hp.weight_decay, "torch_adam": True},
        }
    return out


# DeepSpeed's CPU backend compiles a C++ op (a shared-memory all-reduce) in every new
# process that starts DeepSpeed, unless an identical build is cached: a minute or more of
# both cores per node, and a compiler on every node. It serves ``inference_all_reduce``
# only; training steps reduce through torch.distributed (gloo here).
def skip_inference_comm_op() -> None:
    """Tell DeepSpeed in this process that its inference-only shared-memory op is unavailable, so
    ``init_distributed`` builds nothing (DeepSpeed keeps edits to ``__compatible_ops__``)."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


class DeepSpeed(Strategy):
    """A DeepSpeed engine with the config's ZeRO stage, checkpointing through DeepSpeed."""

    name = "deepspeed"

    def __init__(self, module: nn.Module, config: TrainingConfig, rank: int, world: int, device: Any):
        import deepspeed

        super().__init__(module, config, rank, world, device)
        skip_inference_comm_op()
        # Ray Train has already made the process group; DeepSpeed adopts it.
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        client = None
        if config.hyperparameters.optimizer == "sgd":
            client = _torch_optimizer(module.parameters(), config.hyperparameters)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module,
            model_parameters=module.parameters(),
            optimizer=client,
            config=deepspeed_config(config, world, sum(p.numel() for p in module.parameters())),
        )

    def forward(self, x):
        return self.engine(x)

    def step(self, loss):
        self.engine.backward(loss)
        self.engine.step()

    def train(self, mode=True):
        self.engine.train(mode)

    def full_state(self):
        import deepspeed

        module = self.engine.module
        if self.config.strategy.zero_stage == 3:
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        return None if self.rank else state

    def save(self, folder):
        target = folder / _DS_FOLDER
        self.engine.save_checkpoint(str(target), tag=_DS_TAG)
        # Each worker lists what it wrote into its own folder; Ray merges the folders.
        return sorted(str(p.relative_to(folder)) for p in target.rglob("*") if p.is_file())

    def load(self, folder):
        path, _ = self.engine.load_checkpoint(str(folder / _DS_FOLDER), tag=_DS_TAG,
                                              load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {folder / _DS_FOLDER}")


def make_strategy(module: nn.Module, config: TrainingConfig, rank: int, world: int, device: Any) -> Strategy:
    cls = DeepSpeed if config.strategy.kind == "deepspeed" else DDP
    return cls(module, config, rank, world, device)
