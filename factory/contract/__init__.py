"""The model contract and model packages: the one interface that train, gates and serve share.

A ``Contract`` says what a model takes and returns, what it needs and where it came
from; it maps one-to-one onto Open Inference Protocol model metadata. A model
package (safetensors weights, contract, architecture reference, model card,
metrics) is written with ``package`` and read back with ``load``; ``validate``
checks a package against its own contract without training or data;
``open_package`` gives a read-only ``PackageView`` of a stored one (weights on demand).
Importing this package does not import torch.
"""

from __future__ import annotations

from factory.contract._schema import (
    PLATFORM,
    SCHEMA_VERSION,
    Contract,
    DType,
    ExplanationFormat,
    FeatureRef,
    InputSpec,
    Interval,
    Observability,
    OutputSpec,
    Provenance,
    Resources,
    TensorSpec,
)
from factory.contract._checks import check_fits_cluster
from factory.contract.architectures import (
    ENTRY_POINT_GROUP,
    Architecture,
    ArchitectureRef,
    ArchitectureRegistry,
    Signature,
    default_registry,
)
from factory.contract.packages import LoadedModel, ModelPackage, ModelPackageMeta, export, load, package
from factory.contract.validation import Check, LatencyStat, ValidationResult, Violation, validate
from factory.contract.view import PackageView, open_package
from factory.contract._request import InferenceRequest, RequestedOutput, check_request, parse_request

__all__ = [
    "SCHEMA_VERSION",
    "PLATFORM",
    "Contract",
    "DType",
    "ExplanationFormat",
    "FeatureRef",
    "TensorSpec",
    "InputSpec",
    "OutputSpec",
    "Interval",
    "Resources",
    "Observability",
    "Provenance",
    "ENTRY_POINT_GROUP",
    "Architecture",
    "ArchitectureRef",
    "ArchitectureRegistry",
    "Signature",
    "default_registry",
    "ModelPackage",
    "ModelPackageMeta",
    "LoadedModel",
    "package",
    "load",
    "export",
    "validate",
    "ValidationResult",
    "Violation",
    "Check",
    "LatencyStat",
    "PackageView",
    "open_package",
    "check_fits_cluster",
    "check_request",
    "parse_request",
    "InferenceRequest",
    "RequestedOutput",
]
