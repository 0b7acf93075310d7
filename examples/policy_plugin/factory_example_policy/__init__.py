"""An example gate policy: FAIL a package whose weights hold more parameters than allowed.

It shows the whole plugin interface: an ``id``, a ``version``, an optional
``predicate_type``, an optional ``remediation`` (the fix a failure's ticket suggests),
and ``evaluate(package, context) -> PolicyResult``. It reads only
the safetensors headers (``package.weights_header``), never the weights themselves,
and keeps the per-tensor counts as evidence in the store.
"""

from __future__ import annotations

import math

from factory.gates import PolicyContext, PolicyResult, Verdict

__all__ = ["MaxParametersPolicy"]


class MaxParametersPolicy:
    """PASS when the package has at most ``limit`` parameters."""

    id = "max-parameters"
    version = "1.0"
    predicate_type = "https://example.com/attestations/max-parameters/v1"
    remediation = "shrink the model (fewer or narrower layers) or raise the limit in the policy set"

    def __init__(self, limit: int = 10_000_000):
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        self.limit = limit
        self.config = {"limit": limit}

    def evaluate(self, package, context: PolicyContext) -> PolicyResult:
        counts = {}
        for name in package.weight_files:
            for tensor in package.weights_header(name).tensors:
                counts[tensor.name] = math.prod(tensor.shape)
        total = sum(counts.values())
        evidence = {"parameters": context.evidence(counts)}
        figures = {"parameters": total, "limit": self.limit}
        if total > self.limit:
            return PolicyResult(self.id, self.version, Verdict.FAIL,
                                f"{total} parameters exceed the limit of {self.limit}", figures, evidence)
        return PolicyResult(self.id, self.version, Verdict.PASS, f"{total} parameters", figures, evidence)
