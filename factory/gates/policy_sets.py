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
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory.errors import InvalidInputError
from factory.gates.policy import Policy, PolicyRegistry, default_policies
from factory.store import canonical_json

__all__ = ["PolicySpec", "PolicySet"]


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
