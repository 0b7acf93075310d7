"""A deliberately bad classifier for serving tests: the built-in MLP that fails a share of calls or sleeps.

Registered through the contract's architecture registry like any plugin (the entry point
in ``factory_faulty-1.0.dist-info``), so it is packaged, gated, admitted, deployed and
served as any other model; the integration tests put this folder on every Ray worker's
path. ``fail_rate``: the chance that a forward pass raises; ``sleep_ms``: added to every
pass; both only inside a Ray Serve replica (unless ``faults_everywhere``), so it passes
its gates and goes bad in production, which is what a rollout is there to catch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from factory.contract import Architecture
from factory.contract._mlp import build_classifier, classifier_signature

_FAULTS = ("fail_rate", "sleep_ms", "faults_everywhere")


def _in_a_replica() -> bool:
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # not in a Serve replica (or Ray is not even imported there)
        return False
    return True


class Faulty(nn.Module):
    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.fail_rate = float(config.get("fail_rate", 0.0))
        self.sleep_s = float(config.get("sleep_ms", 0.0)) / 1000
        self.faults_everywhere = bool(config.get("faults_everywhere", False))
        self.faulty: bool | None = None
        self.mlp = build_classifier({k: v for k, v in config.items() if k not in _FAULTS})

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.faulty is None:
            self.faulty = self.faults_everywhere or _in_a_replica()
        if not self.faulty:
            return self.mlp(*inputs)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_rate and float(torch.rand(())) < self.fail_rate:
            raise RuntimeError("injected failure (faulty-classifier)")
        return self.mlp(*inputs)


def build(config: Mapping[str, Any]) -> Faulty:
    return Faulty(config)


def signature(config: Mapping[str, Any]):
    return classifier_signature({k: v for k, v in config.items() if k not in _FAULTS})


def architectures() -> list[Architecture]:
    return [Architecture("faulty-classifier", "1", build, signature=signature, task="tabular-classification",
                         description="The MLP classifier, failing a share of calls or sleeping (tests only).")]
