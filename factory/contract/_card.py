"""The model card: ``README.md`` with Hugging Face-style YAML front matter.

The front matter carries ``library_name``, ``tags``, ``pipeline_tag`` and the
metrics in ``model-index``, so the card reads on the Hub and parses with any YAML
library. It holds nothing time-dependent: the same package writes the same card.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from factory._untrusted import load_yaml, preview
from factory.contract._schema import Contract
from factory.contract.architectures import ArchitectureRef
from factory.errors import ContractViolationError, InvalidInputError

__all__ = ["MAX_FRONT_MATTER_BYTES", "render_card", "parse_card", "check_metrics"]

MAX_FRONT_MATTER_BYTES = 256 << 10


def _finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Metrics as ``{name: finite number}``, sorted by name."""
    out = {}
    for name, value in sorted((metrics or {}).items()):
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"metric name {preview(name)} must be a non-empty string")
        if not _finite_number(value):
            raise InvalidInputError(f"metric {preview(name)} is {preview(value)}: metrics must be finite numbers")
        out[name] = float(value)
    return out


def _front_matter(contract: Contract, arch: ArchitectureRef, metrics: Mapping[str, float],
                  task: str | None, license: str | None) -> dict[str, Any]:
    front: dict[str, Any] = {"library_name": "factory"}
    if license:
        front["license"] = license
    front["tags"] = ["factory", arch.name] + ([task] if task else [])
    if task:
        front["pipeline_tag"] = task
    if metrics:
        front["metrics"] = list(metrics)
    dataset = contract.provenance.dataset
    results = []
    if metrics:
        results.append({
            "task": {"type": task or "other"},
            "dataset": {"name": dataset or "unspecified", "type": "factory-dataset"},
            "metrics": [{"type": k, "value": v, "name": k} for k, v in metrics.items()],
        })
    front["model-index"] = [{"name": contract.name, "results": results}]
    return front


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_card(contract: Contract, arch: ArchitectureRef, metrics: Mapping[str, float], *,
                task: str | None = None, license: str | None = None, description: str = "") -> str:
    import yaml

    front = yaml.safe_dump(_front_matter(contract, arch, metrics, task, license), sort_keys=False)
    inputs = [(i.name, str(i.dtype), str(list(i.shape)), "yes" if i.nullable else "no",
               f"{i.feature_view.name} ({i.feature_view.digest[:19]})" if i.feature_view else "")
              for i in contract.inputs]
    outputs = [(o.name, str(o.dtype), str(list(o.shape))) for o in contract.outputs]
    res = contract.resources
    prov = contract.provenance
    parts = [
        f"---\n{front}---",
        f"# {contract.name}",
        description or contract.description or f"A {arch.name} model packaged by factory.",
        "## Inputs",
        _table(inputs, ("name", "datatype", "shape", "nullable", "feature view")),
        "## Outputs",
        _table(outputs, ("name", "datatype", "shape")),
        "## Serving",
        f"p99 latency bound {res.p99_latency_ms:g} ms at batch size up to {res.max_batch_size} "
        f"(batch wait {res.batch_wait_ms:g} ms); {res.cpus:g} CPU, {res.gpus:g} GPU, {res.memory_mb} MiB.",
        "## Metrics",
        _table([(k, f"{v:.6g}") for k, v in metrics.items()], ("metric", "value")) if metrics else "None recorded.",
        "## Provenance",
        _table([("architecture", f"{arch.label} (code {arch.code_digest})"),
                ("training config", prov.training_config or "none"),
                ("dataset", prov.dataset or "none"),
                ("code", prov.code or "none"),
                ("environment", prov.environment or "none")], ("what", "digest")),
    ]
    return "\n\n".join(parts) + "\n"


def parse_card(text: str | bytes) -> dict[str, Any]:
    """The card's front matter as a dict; raises if it is missing, not YAML, or too big or deep to be a card.

    The front matter is bounded (256 KiB, 64 levels, 100,000 nodes with aliases expanded)
    before anything is built from it, so a crafted card cannot exhaust the reader.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractViolationError(f"README.md is not UTF-8 text ({exc.reason}): re-save it as UTF-8") from None
    if not text.startswith("---\n"):
        raise ContractViolationError("README.md has no YAML front matter: it must start with a '---' line")
    end = text.find("\n---", 4)
    if end < 0:
        raise ContractViolationError("README.md front matter is not closed: add a '---' line after it")
    front = load_yaml(text[4:end], what="README.md front matter", max_bytes=MAX_FRONT_MATTER_BYTES,
                      error=ContractViolationError)
    if not isinstance(front, dict):
        raise ContractViolationError("README.md front matter must be a YAML mapping")
    return front
