"""The model contract: what a model takes, what it returns, what it needs and where it came from.

It is the one interface that training, gates and serving share. Every input and
output maps one-to-one onto an Open Inference Protocol (KServe V2) tensor metadata
entry, so ``/v2/models/{name}`` is served straight from ``Contract.oip_metadata()``.
Shapes include the batch dimension, which comes first and is always ``-1``.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from factory.errors import NotFoundError
from factory.store import canonical_json, check_digest

__all__ = [
    "SCHEMA_VERSION",
    "PLATFORM",
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
    "Contract",
    "canonical_json",
]

SCHEMA_VERSION = "factory.contract/v1"
PLATFORM = "factory_torch_safetensors"

Digest = Annotated[str, AfterValidator(check_digest)]
TensorName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$", max_length=128)]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=128)]


class DType(enum.StrEnum):
    """Tensor datatypes, named exactly as the Open Inference Protocol names them."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def torch_name(self) -> str | None:
        """The ``torch`` dtype attribute name (``None`` for BYTES, which torch cannot hold)."""
        return _TORCH.get(self)

    @property
    def numpy_name(self) -> str:
        return _NUMPY[self]

    @classmethod
    def from_torch(cls, dtype: Any) -> DType | None:
        """The DType of a ``torch.dtype``, or ``None`` when OIP has no name for it."""
        name = str(dtype).removeprefix("torch.")
        return _FROM_TORCH.get(name)


_TORCH = {
    DType.BOOL: "bool", DType.UINT8: "uint8", DType.UINT16: "uint16", DType.UINT32: "uint32",
    DType.UINT64: "uint64", DType.INT8: "int8", DType.INT16: "int16", DType.INT32: "int32",
    DType.INT64: "int64", DType.FP16: "float16", DType.FP32: "float32", DType.FP64: "float64",
}
_FROM_TORCH = {v: k for k, v in _TORCH.items()}
_NUMPY = {**{k: ("bool" if k is DType.BOOL else v) for k, v in _TORCH.items()}, DType.BYTES: "object"}


class ExplanationFormat(enum.StrEnum):
    """How an output's explanation is expressed, when the model gives one."""

    FEATURE_IMPORTANCE = "feature-importance"
    SHAP = "shap"
    INTEGRATED_GRADIENTS = "integrated-gradients"
    ATTENTION = "attention"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if not shape:
        raise ValueError("shape must have at least the batch dimension: use [-1] for one value per row")
    if shape[0] != -1:
        raise ValueError(f"shape {list(shape)} must start with -1, the batch dimension (e.g. [-1, {shape[0]}])")
    for dim in shape[1:]:
        if dim != -1 and dim < 1:
            raise ValueError(f"shape {list(shape)} has dimension {dim}: use a positive size or -1 for a variable one")
    return shape


Shape = Annotated[tuple[int, ...], Field(max_length=8), AfterValidator(_check_shape)]


class FeatureRef(_Frozen):
    """The feature view (and its exact version) an input is read from."""

    name: str = Field(min_length=1, max_length=256)
    digest: Digest


class TensorSpec(_Frozen):
    """One named tensor; ``shape`` starts with the batch dimension (-1), -1 marks any size."""

    name: TensorName
    dtype: DType
    shape: Shape

    def to_oip(self) -> dict[str, Any]:
        """The Open Inference Protocol tensor metadata: ``{name, datatype, shape}``."""
        return {"name": self.name, "datatype": str(self.dtype), "shape": list(self.shape)}

    def matches(self, shape: tuple[int, ...], batch_size: int | None = None) -> bool:
        """Whether a concrete shape fits this spec (-1 matches anything; the batch dim must be ``batch_size``)."""
        if len(shape) != len(self.shape):
            return False
        if batch_size is not None and shape[0] != batch_size:
            return False
        return all(want == -1 or want == got for want, got in zip(self.shape[1:], shape[1:], strict=True))


class InputSpec(TensorSpec):
    """A model input: may be null in a request when ``nullable``; may name its feature view."""

    nullable: bool = False
    feature_view: FeatureRef | None = None

    @classmethod
    def from_oip(cls, meta: dict[str, Any]) -> InputSpec:
        return cls(name=meta["name"], dtype=meta["datatype"], shape=tuple(meta["shape"]))


class Interval(_Frozen):
    """A confidence interval given by two other outputs of the same model."""

    lower: TensorName
    upper: TensorName
    level: float = Field(0.95, gt=0.0, lt=1.0)


class OutputSpec(TensorSpec):
    """A model output, optionally with a confidence interval and an explanation format."""

    interval: Interval | None = None
    explanation: ExplanationFormat | None = None

    @classmethod
    def from_oip(cls, meta: dict[str, Any]) -> OutputSpec:
        return cls(name=meta["name"], dtype=meta["datatype"], shape=tuple(meta["shape"]))


# Sane bounds for one replica, whatever the cluster: beyond them a contract is a typo or an
# attack (a value of Infinity used to crash the validator). ``check_fits_cluster`` compares
# the request with the nodes of a real cluster at deploy time.
MAX_CPUS = 1024
MAX_GPUS = 64
MAX_MEMORY_MB = 4 << 20  # 4 TiB
MAX_LATENCY_MS = 3_600_000.0  # one hour
MAX_BATCH_SIZE = 65536


class Resources(_Frozen):
    """What one replica needs, and the latency it promises at ``max_batch_size``.

    Every number is finite and bounded: at most 1024 CPUs, 64 GPUs, 4 TiB of memory, a
    p99 of one hour and a batch of 65,536.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cpus: float = Field(1.0, gt=0, le=MAX_CPUS)
    gpus: float = Field(0.0, ge=0, le=MAX_GPUS)
    memory_mb: int = Field(512, gt=0, le=MAX_MEMORY_MB)
    p99_latency_ms: float = Field(100.0, gt=0, le=MAX_LATENCY_MS)
    max_batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    batch_wait_ms: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _wait_within_bound(self) -> Resources:
        if self.batch_wait_ms >= self.p99_latency_ms:
            raise ValueError(
                f"batch_wait_ms ({self.batch_wait_ms}) must be below p99_latency_ms ({self.p99_latency_ms}): "
                "waiting for a batch would alone break the latency bound"
            )
        return self


class Observability(_Frozen):
    """What serving logs: the share of requests sampled and the inputs watched for drift."""

    sample_rate: float = Field(0.1, ge=0.0, le=1.0)
    drift_features: tuple[TensorName, ...] = ()


class Provenance(_Frozen):
    """Digests of what produced the weights; absent for a model that was never trained."""

    training_config: Digest | None = None
    dataset: Digest | None = None
    code: Digest | None = None
    environment: Digest | None = None

    def digests(self) -> tuple[str, ...]:
        return tuple(d for d in (self.training_config, self.dataset, self.code, self.environment) if d)


def _unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{kind} name {name!r} appears twice: every {kind} needs its own name")
        seen.add(name)


class Contract(_Frozen):
    """The model contract. Serving needs nothing else to validate requests and run the model."""

    schema_version: Literal["factory.contract/v1"] = SCHEMA_VERSION
    name: ModelName
    description: str = Field("", max_length=4096)
    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    outputs: tuple[OutputSpec, ...] = Field(min_length=1)
    resources: Resources = Resources()
    observability: Observability = Observability()
    provenance: Provenance = Provenance()

    @model_validator(mode="after")
    def _cross_check(self) -> Contract:
        _unique("input", [i.name for i in self.inputs])
        _unique("output", [o.name for o in self.outputs])
        inputs = {i.name for i in self.inputs}
        outputs = {o.name for o in self.outputs}
        for feature in self.observability.drift_features:
            if feature not in inputs:
                raise ValueError(
                    f"observability.drift_features names {feature!r}, which is not an input: "
                    f"choose among {sorted(inputs)}"
                )
        for out in self.outputs:
            if out.interval is None:
                continue
            for bound in (out.interval.lower, out.interval.upper):
                if bound not in outputs or bound == out.name:
                    raise ValueError(
                        f"output {out.name!r} takes its interval from {bound!r}, which is not another output: "
                        "declare the bound as an output of its own"
                    )
        return self

    # -- lookups -------------------------------------------------------------------
    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise NotFoundError(f"contract {self.name!r} has no input {name!r}: its inputs are "
                            f"{[i.name for i in self.inputs]}")

    def output(self, name: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise NotFoundError(f"contract {self.name!r} has no output {name!r}: its outputs are "
                            f"{[o.name for o in self.outputs]}")

    # -- serialisation -------------------------------------------------------------
    def to_json(self) -> bytes:
        """Canonical JSON: the bytes stored as ``contract.json`` and hashed for ``digest``."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes | str) -> Contract:
        return cls.model_validate_json(data)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_json()).hexdigest()

    def oip_metadata(self, versions: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        """The body of ``GET /v2/models/{name}``: name, versions, platform, inputs, outputs."""
        return {
            "name": self.name,
            "versions": list(versions),
            "platform": PLATFORM,
            "inputs": [i.to_oip() for i in self.inputs],
            "outputs": [o.to_oip() for o in self.outputs],
        }
