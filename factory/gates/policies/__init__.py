"""The built-in gate policies, registered in the ``factory.policies`` entry-point group like any plugin.

Each is a class built with its keyword configuration (a frozen pydantic model, so a
typo in a policy set fails when the set is loaded, naming the field):

- ``contract`` (``ContractPolicy``): the contract's validation harness passes.
- ``quality`` (``QualityPolicy``): metrics computed on a named evaluation dataset version
  meet their thresholds.
- ``fairness`` (``FairnessPolicy``): demographic parity and equalized odds over a
  sensitive column, with fairlearn.
- ``security`` (``SecurityPolicy``): safetensors weights with valid headers; an imported
  folder scanned with modelscan, pickles refused unread.
- ``drift`` (``DriftPolicy``): PSI and two-sample KS per feature between two dataset versions.
- ``model-card`` (``ModelCardPolicy``): required card sections and metrics are present and parse.
"""

from __future__ import annotations

from factory.gates.policies.contract import ContractPolicy
from factory.gates.policies.drift import DriftPolicy
from factory.gates.policies.fairness import FairnessPolicy
from factory.gates.policies.model_card import ModelCardPolicy
from factory.gates.policies.quality import QualityPolicy
from factory.gates.policies.security import SecurityPolicy

__all__ = ["ContractPolicy", "QualityPolicy", "FairnessPolicy", "SecurityPolicy", "DriftPolicy", "ModelCardPolicy"]
