"""The built-in multilayer perceptrons: a classifier and a regressor over tabular inputs.

This module's source is the code digest of both architectures, so it holds only
them: any change here changes the digest recorded in every package built from it.
Inputs arrive positionally in contract order; each is flattened per row and the
rows are concatenated, so a contract may give one ``[-1, n]`` input or one input per
feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from factory.contract._schema import DType, InputSpec, OutputSpec
from factory.contract.architectures import Signature

__all__ = ["MLPConfig", "MLP", "build_classifier", "build_regressor", "classifier_signature", "regressor_signature"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPConfig(BaseModel):
    """Layer sizes of an MLP: ``in_features`` values per row to ``out_features`` classes or targets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    in_features: int = Field(ge=1, le=1 << 20)
    out_features: int = Field(ge=1, le=1 << 20)
    hidden: tuple[int, ...] = Field((64,), max_length=16)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MLP(nn.Module):
    """Linear layers with an activation (and dropout) between them."""

    def __init__(self, config: MLPConfig, task: Literal["classification", "regression"]):
        super().__init__()
        self.task = task
        layers: list[nn.Module] = []
        width = config.in_features
        for size in config.hidden:
            layers += [nn.Linear(width, size), _ACTIVATIONS[config.activation]()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = size
        layers.append(nn.Linear(width, config.out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = inputs[0].shape[0]
        x = torch.cat([t.reshape(rows, -1).to(torch.float32) for t in inputs], dim=1)
        out = self.layers(x)
        if self.task == "regression":
            return {"prediction": out}
        return {"probabilities": torch.softmax(out, dim=1), "label": torch.argmax(out, dim=1)}


def build_classifier(config: Mapping[str, Any]) -> MLP:
    cfg = MLPConfig.model_validate(dict(config))
    if cfg.out_features < 2:
        raise ValueError("a classifier needs out_features >= 2 (one per class)")
    return MLP(cfg, "classification")


def build_regressor(config: Mapping[str, Any]) -> MLP:
    return MLP(MLPConfig.model_validate(dict(config)), "regression")


def _inputs(cfg: MLPConfig) -> tuple[InputSpec, ...]:
    return (InputSpec(name="features", dtype=DType.FP32, shape=(-1, cfg.in_features)),)


def classifier_signature(config: Mapping[str, Any]) -> Signature:
    cfg = MLPConfig.model_validate(dict(config))
    return Signature(
        inputs=_inputs(cfg),
        input_width=cfg.in_features,
        outputs=(
            OutputSpec(name="probabilities", dtype=DType.FP32, shape=(-1, cfg.out_features)),
            OutputSpec(name="label", dtype=DType.INT64, shape=(-1,)),
        ),
    )


def regressor_signature(config: Mapping[str, Any]) -> Signature:
    cfg = MLPConfig.model_validate(dict(config))
    return Signature(
        inputs=_inputs(cfg),
        input_width=cfg.in_features,
        outputs=(OutputSpec(name="prediction", dtype=DType.FP32, shape=(-1, cfg.out_features)),),
    )
