"""Policy sets: which policies a gate run evaluates, each with its configuration.

A set is what ``factory gates run DIGEST --set NAME`` names; users write it as YAML::

    name: prod
    policies:
      - id: contract
      - id: quality
        config: {dataset: credit-eval@3, label: default, features: [x, group],
                 thresholds: {accuracy: {min: 0.9}}}
      - id: fairness
        config: {dataset: credit-eval@3, label: default, sensitive: group, features: [x, group]}

Building a set creates every policy through the registry first, so a typo in a
policy id or its configuration fails before anything is evaluated, naming it.

The built-in sets ``dev``, ``staging`` and ``prod`` hold what the default environment
policies require (see ``admission.DEFAULT_ENVIRONMENTS``). What they cannot know is
left to whoever runs them, a pipeline or ``factory gates run``, as ``GateInputs``: the
evaluation dataset version and its label column (quality, fairness), the quality
thresholds, the sensitive column (fairness), and the reference and current dataset
versions (drift). ``builtin_set(name, inputs)`` refuses, naming each, any input its
policies need and were not given.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory.errors import InvalidInputError
from factory.gates.policy import Policy, PolicyRegistry, default_policies
from factory.store import canonical_json

__all__ = ["PolicySpec", "PolicySet", "GateInputs", "BUILTIN_SETS", "builtin_set", "policy_set"]


class PolicySpec(BaseModel):
    """One policy of a set: its id and keyword configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    config: dict[str, Any] = Field(default_factory=dict)


class PolicySet(BaseModel):
    """A named, ordered list of policies to evaluate together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    policies: tuple[PolicySpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PolicySet:
        ids = [p.id for p in self.policies]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"policy {twice[0]!r} appears twice: a set evaluates each policy once")
        return self

    def build(self, registry: PolicyRegistry | None = None) -> list[Policy]:
        """Every policy of the set, created and configured (raises naming the first bad one)."""
        registry = registry or default_policies()
        return [registry.create(spec.id, **spec.config) for spec in self.policies]

    def to_json(self) -> bytes:
        """Canonical JSON: the config a gate run records, and its idempotency key is derived from."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> PolicySet:
        """A set from a YAML file, or from YAML text."""
        import yaml

        text = source
        if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                               and os.path.exists(source)):
            with open(source, encoding="utf-8") as f:
                text = f.read()
        try:
            return cls.model_validate(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"the policy set is not valid YAML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the set"
            raise InvalidInputError(f"policy set: {where}: {first['msg']} (fix the YAML and try again)") from None


class GateInputs(BaseModel):
    """What a built-in set needs from the pipeline or person that runs it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str | None = Field(None, description="the evaluation dataset version (quality, fairness)")
    label: str | None = Field(None, description="its column holding the true value (quality, fairness)")
    features: tuple[str, ...] | None = Field(None, description="columns stacked into the model's input, in order")
    output: str | None = Field(None, description="the model output judged; default 'label', else the first")
    thresholds: dict[str, Any] | None = Field(None, description="quality bounds: {metric: {min: x, max: y}}")
    sensitive: str | None = Field(None, description="the column naming each row's group (fairness)")
    reference: str | None = Field(None, description="the dataset version the model was trained on (drift)")
    current: str | None = Field(None, description="the dataset version to compare with it (drift)")
    directory: str | None = Field(None, description="a folder the model was imported from, scanned (security)")


BUILTIN_SETS: dict[str, tuple[str, ...]] = {
    "dev": ("contract", "security"),
    "staging": ("contract", "security", "model-card", "quality"),
    "prod": ("contract", "security", "model-card", "quality", "fairness", "drift"),
}

# Which inputs each built-in policy needs, and why (for the refusal that names them).
_NEEDS: dict[str, dict[str, str]] = {
    "quality": {"dataset": "the evaluation dataset version", "label": "its label column",
                "thresholds": "the quality thresholds, e.g. accuracy>=0.9"},
    "fairness": {"dataset": "the evaluation dataset version", "label": "its label column",
                 "sensitive": "the sensitive column fairness compares groups by"},
    "drift": {"reference": "the training dataset version", "current": "the dataset version to compare it with"},
}


def _config(policy_id: str, inputs: GateInputs) -> dict[str, Any]:
    data = {"dataset": inputs.dataset, "label": inputs.label, "features": inputs.features, "output": inputs.output}
    data = {k: v for k, v in data.items() if v is not None}
    if policy_id == "quality":
        return {**data, "thresholds": inputs.thresholds}
    if policy_id == "fairness":
        return {**data, "sensitive": inputs.sensitive}
    if policy_id == "drift":
        return {"reference": inputs.reference, "current": inputs.current}
    if policy_id == "security" and inputs.directory:
        return {"directory": inputs.directory}
    return {}


def builtin_set(name: str, inputs: GateInputs | None = None) -> PolicySet:
    """The built-in set ``name`` (dev, staging, prod) configured with ``inputs``."""
    if name not in BUILTIN_SETS:
        raise InvalidInputError(f"{name!r} is not a built-in gate set: choose among {', '.join(BUILTIN_SETS)}, "
                                "or give the path of a YAML policy set")
    inputs = inputs or GateInputs()
    missing: dict[str, list[str]] = {}
    for policy_id in BUILTIN_SETS[name]:
        for field, why in _NEEDS.get(policy_id, {}).items():
            if getattr(inputs, field) is None:
                missing.setdefault(f"{field} ({why})", []).append(policy_id)
    if missing:
        listed = "; ".join(f"{what}, for {' and '.join(ids)}" for what, ids in missing.items())
        raise InvalidInputError(f"the {name} gate set needs {listed}: give them (factory gates run --dataset, "
                                "--label, --threshold, --sensitive, --reference, --current) or write the set as YAML")
    specs = [PolicySpec(id=policy_id, config=_config(policy_id, inputs)) for policy_id in BUILTIN_SETS[name]]
    return PolicySet(name=name, policies=tuple(specs))


def policy_set(source: str | os.PathLike[str] | PolicySet, inputs: GateInputs | None = None) -> PolicySet:
    """A set by built-in name (with ``inputs``), from a YAML file, or as given."""
    if isinstance(source, PolicySet):
        return source
    text = os.fspath(source)
    if text in BUILTIN_SETS:
        return builtin_set(text, inputs)
    if not os.path.isfile(text):
        raise InvalidInputError(f"{text!r} is neither a built-in gate set ({', '.join(BUILTIN_SETS)}) nor a YAML "
                                "file: give a set name or the path of a policy set file")
    if inputs is not None and inputs != GateInputs():
        raise InvalidInputError(f"inputs such as the evaluation dataset go into the built-in sets only; {text} "
                                "configures its policies itself: put them in the YAML")
    return PolicySet.from_yaml(text)
