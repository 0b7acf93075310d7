"""A finished run's weights as a model package behind its contract.

The contract's inputs and outputs come from the architecture's signature for the
config; its provenance names the config, dataset, code and environment digests. The
package's parents add the run and its final checkpoint where the store records them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from factory.errors import FactorySystemError
import factory.train._checkpoint as ckpt

if TYPE_CHECKING:
    import torch

    from factory.contract import ArchitectureRegistry, Contract, ModelPackage
    from factory.store import Store
    from factory.train._record import Inputs
    from factory.train.submission import Submission

__all__ = ["build_contract", "package_weights", "read_final_weights"]


def build_contract(sub: Submission, inputs: Inputs) -> Contract:
    from factory.contract import Contract, Provenance

    config = sub.config
    description = (
        f"{sub.architecture.label} trained by factory on dataset {config.dataset} to predict "
        f"{config.label!r} from {', '.join(repr(f) for f in config.features)} "
        f"({config.epochs} epochs, seed {config.seed}, {config.compute.workers} x {config.compute.tier}, "
        f"{config.strategy.kind}{f' ZeRO-{config.strategy.zero_stage}' if config.strategy.zero_stage else ''})."
    )
    return Contract(
        name=config.name,
        description=description[:4096],
        inputs=sub.signature.inputs,
        outputs=sub.signature.outputs,
        provenance=Provenance(training_config=inputs.config, dataset=inputs.dataset, code=inputs.code,
                              environment=inputs.environment),
    )


def read_final_weights(folder: str | Path, world: int) -> dict[str, torch.Tensor]:
    """The full weights of a verified checkpoint folder."""
    from safetensors.torch import load_file

    problem = ckpt.verify(folder, world)
    if problem is not None:
        raise FactorySystemError(f"the final checkpoint at {folder} does not verify ({problem}); rerun the job")
    return load_file(str(Path(folder) / ckpt.MODEL_FILE))


def package_weights(store: Store, sub: Submission, weights: Mapping[str, torch.Tensor], inputs: Inputs,
                    metrics: Mapping[str, float], *, parents: Sequence[str] = (),
                    registry: ArchitectureRegistry | None = None) -> ModelPackage:
    """Build the architecture, load ``weights`` into it and write the package."""
    from factory.contract import package

    config = sub.config
    module = sub.architecture.build(config.architecture_config)
    module.load_state_dict(dict(weights), strict=True)
    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    contract = build_contract(sub, inputs)
    return package(store, module, contract, metrics=finite, parents=[*inputs.parents(), *parents],
                   description=contract.description, registry=registry)
