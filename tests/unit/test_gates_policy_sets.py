"""Policy sets: written as YAML, built through the registry, refused early when wrong."""

from __future__ import annotations

import pytest

from factory.errors import InvalidInputError
from factory.gates.policies import FairnessPolicy, ModelCardPolicy
from factory.gates.policy_sets import PolicySet

PROD = """
name: prod
policies:
  - id: model-card
  - id: fairness
    config: {dataset: credit@1, label: label, sensitive: group, min_ratio: 0.9}
"""


def test_a_yaml_set_builds_configured_policies_in_order(tmp_path):
    """The set's policies come back created and configured, in the order written, from text or a file."""
    file = tmp_path / "prod.yaml"
    file.write_text(PROD)
    for source in (PROD, str(file), file):
        policies = PolicySet.from_yaml(source).build()
        assert [type(p) for p in policies] == [ModelCardPolicy, FairnessPolicy]
        assert policies[1].config.min_ratio == 0.9


def test_bad_sets_fail_before_anything_runs():
    """An unknown field, a repeated policy, an unknown policy or a bad config is refused, naming it."""
    with pytest.raises(InvalidInputError, match="policies"):
        PolicySet.from_yaml("name: prod\npolicies: []\n")
    with pytest.raises(InvalidInputError, match="appears twice"):
        PolicySet.from_yaml("name: p\npolicies: [{id: contract}, {id: contract}]\n")
    with pytest.raises(KeyError, match="no policy 'contrat'"):
        PolicySet.from_yaml("name: p\npolicies: [{id: contrat}]\n").build()
    with pytest.raises(InvalidInputError, match="min_group_size"):
        PolicySet.from_yaml("name: p\npolicies: [{id: fairness, config: {dataset: d, label: l, sensitive: s, "
                            "min_group_size: 0}}]\n").build()
