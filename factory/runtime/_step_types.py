"""The step types a pipeline can use: what each takes (config, inputs), what it makes (outputs),
where it runs and what it holds by default.

``ingest``, ``sample``, ``features``, ``train``, ``tune``, ``evaluate``, ``gates``, ``package`` and
``user`` steps run as Ray tasks (``_steps_*`` hold their code); a ``rollout`` step runs in the
controller, which hosts the rollout it starts. Each config is checked here, when the
pipeline is loaded, so a bad setting is refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["StepType", "STEP_TYPES", "step_type", "PLACEHOLDER_DIGEST", "explain"]

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64  # stands in for an input's digest while a config is checked
_FUNCTION = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestConfig(_Frozen):
    """A file (input ``source``) or a generated table (``generate``) stored as a dataset version."""

    dataset: str = Field(min_length=1, max_length=128, description="the dataset's name")
    key: tuple[str, ...] = ()
    generate: str | None = Field(None, pattern=_FUNCTION, description="module:function returning a table")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the generator")
    allow_schema_change: bool = False


class SampleConfig(_Frozen):
    """A deterministic sample of the dataset version at input ``dataset``."""

    dataset: str | None = Field(None, min_length=1, max_length=128, description="the sample's name")
    fraction: float | None = Field(None, gt=0, le=1)
    rows: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _one(self) -> SampleConfig:
        if (self.fraction is None) == (self.rows is None):
            raise ValueError("give fraction or rows (one of them)")
        return self


class FeaturesConfig(_Frozen):
    """A point-in-time training set: input ``dataset`` (labelled entity rows with a timestamp) joined against
    every other input (a feature view each: a digest, ``ref:feature-view/NAME`` or another step's output)."""

    dataset: str = Field(min_length=1, max_length=128, description="the training set's dataset name")
    timestamp: str = Field("event_timestamp", min_length=1, description="the rows' time column")
    key: tuple[str, ...] = Field((), description="the columns identifying a row (the versions' key)")
    holdout: float | None = Field(None, gt=0, lt=1, description="the most recent share of rows held out")
    holdout_dataset: str | None = Field(None, min_length=1, max_length=128,
                                        description="the holdout's dataset name (default DATASET-holdout)")
    transform: str | None = Field(None, pattern=_FUNCTION,
                                  description="module:function(table, **transform_args) applied to the training part")
    transform_args: dict[str, Any] = Field(default_factory=dict)
    allow_backfill: bool = False

    @model_validator(mode="after")
    def _pairs(self) -> FeaturesConfig:
        if self.holdout_dataset is not None and self.holdout is None:
            raise ValueError("holdout_dataset names the holdout, but holdout (the share of rows, e.g. 0.2) is unset")
        if self.transform_args and self.transform is None:
            raise ValueError("transform_args are given but no transform (module:function) takes them")
        return self


class EvaluateConfig(_Frozen):
    """The metrics of the input ``model`` on the input ``dataset`` (what the quality gate judges), recorded."""

    label: str = Field(min_length=1, description="the column holding the true value")
    features: tuple[str, ...] | None = Field(None, min_length=1,
                                             description="columns stacked into the model's one input, in order")
    output: str | None = Field(None, min_length=1, description="the output to judge (default 'label', else the first)")
    name: str | None = Field(None, min_length=1, max_length=128, description="the evaluation's name")


class GatesConfig(_Frozen):
    """A built-in gate set on the candidate (input ``model``); inputs ``dataset``, ``reference``, ``current``."""

    set: Literal["dev", "staging", "prod"] = "prod"
    label: str | None = None
    features: tuple[str, ...] | None = None
    output: str | None = None
    thresholds: dict[str, dict[str, float]] | None = None
    sensitive: str | None = None


class PackageConfig(_Frozen):
    """A model packaged behind its contract (``builder``) or taken as built (input ``model``), then
    validated and registered as a candidate."""

    builder: str | None = Field(None, pattern=_FUNCTION, description="module:function returning (module, contract)")
    args: dict[str, Any] = Field(default_factory=dict)
    validate_contract: bool = True


def _rollout_config() -> type[BaseModel]:
    from factory.serve import RolloutConfig

    class RolloutStepConfig(_Frozen):
        """Roll the candidate (input ``model``) out in ``env``; the step waits for its outcome."""

        env: str = Field("prod", pattern=r"^[a-z][a-z0-9-]{0,63}$")
        allow_rollback: bool = Field(False, description="a rollback ends the step as succeeded instead of failed")
        rollout: RolloutConfig = RolloutConfig()

    return RolloutStepConfig


def _training(config: Mapping[str, Any]) -> dict[str, Any]:
    from factory.train import TrainingConfig

    if "dataset" in config:
        raise ValueError("dataset: a train step reads its dataset from its input 'dataset', not from its config")
    TrainingConfig.model_validate({**config, "dataset": PLACEHOLDER_DIGEST})
    return dict(config)


def _sweep(config: Mapping[str, Any]) -> dict[str, Any]:
    from factory.train import SweepConfig

    train = config.get("train")
    if isinstance(train, Mapping) and "dataset" in train:
        raise ValueError("train.dataset: a tune step reads its dataset from its input 'dataset', not from its config")
    SweepConfig.model_validate({**config, "train": {**(train or {}), "dataset": PLACEHOLDER_DIGEST}})
    return dict(config)


@dataclass(frozen=True)
class StepType:
    """One kind of step. ``required``/``optional`` inputs (None: any), ``outputs`` (a function of the
    config; None: any), ``where`` it runs, the CPUs an attempt holds by default, and its code."""

    name: str
    description: str
    config: Callable[[], type[BaseModel]] | Callable[[Mapping[str, Any]], dict[str, Any]] | None
    required: tuple[str, ...] | None
    optional: tuple[str, ...]
    outputs: Callable[[Mapping[str, Any]], frozenset[str] | None]
    run: str  # module:function of the implementation
    where: Literal["task", "controller"] = "task"
    cpus: float = 1.0
    is_model: bool = True  # config is a pydantic model (else a checking function)

    def check(self, config: Mapping[str, Any], inputs: tuple[str, ...]) -> dict[str, Any]:
        """``config`` checked (defaults filled in) against this type, and ``inputs`` against what it reads."""
        from factory.store import canonical_json

        try:
            canonical_json(dict(config))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config must be plain JSON (strings, numbers, lists, mappings): {exc}") from None
        normalized = dict(config)
        if self.config is not None:
            try:
                if self.is_model:
                    normalized = self.config().model_validate(dict(config)).model_dump(mode="json")
                else:
                    normalized = self.config(config)
            except ValidationError as exc:
                raise ValueError(explain(exc, "config")) from None
        if self.required is not None:
            wanted = set(self.required)
            missing = sorted(wanted - set(inputs))
            if missing:
                raise ValueError(f"{_article(self.name)} {self.name} step needs input(s) {', '.join(missing)}")
            unknown = sorted(set(inputs) - wanted - set(self.optional))
            if unknown:
                known = sorted(wanted | set(self.optional))
                raise ValueError(f"{_article(self.name)} {self.name} step takes no input {', '.join(map(repr, unknown))} "
                                 f"(it reads: {', '.join(known) or 'none'})")
        self._cross_check(normalized, inputs)
        return normalized

    def _cross_check(self, config: Mapping[str, Any], inputs: tuple[str, ...]) -> None:
        if self.name == "ingest" and (config.get("generate") is None) == ("source" not in inputs):
            raise ValueError("an ingest step reads input 'source' (a file:... or a digest) or config 'generate' "
                             "(module:function), one of them")
        if self.name == "features":
            views = [name for name in inputs if name != "dataset"]
            if "dataset" not in inputs or not views:
                raise ValueError("a features step reads input 'dataset' (the labelled rows) and at least one feature "
                                 "view, each as another input (e.g. customer-profile: ref:feature-view/customer-profile)")
        if self.name == "package" and (config.get("builder") is None) == ("model" not in inputs):
            raise ValueError("a package step takes input 'model' (a packaged model) or config 'builder' "
                             "(module:function), one of them")
        if self.name == "user" and set(config) & set(inputs):
            both = ", ".join(sorted(set(config) & set(inputs)))
            raise ValueError(f"{both} is both an input and a config entry: a user function gets both as keyword "
                             "arguments, so rename one")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def explain(exc: ValidationError, prefix: str) -> str:
    """Each problem of ``exc`` as ``prefix.field: what to change``, on one line."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join([prefix, *(str(p) for p in error["loc"])])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known setting: check its spelling and indentation"
        elif error["type"] == "missing":
            message = "is required"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def _fixed(*names: str) -> Callable[[Mapping[str, Any]], frozenset[str]]:
    return lambda config: frozenset(names)


def _features_outputs(config: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(("dataset", "holdout") if config.get("holdout") is not None else ("dataset",))


_MODEL_OUTPUTS = ("model", "config", "code", "environment")

STEP_TYPES: dict[str, StepType] = {t.name: t for t in (
    StepType("ingest", "a file or a generated table stored as a dataset version", lambda: IngestConfig,
             (), ("source",), _fixed("dataset"), "factory.runtime._steps_data:ingest"),
    StepType("sample", "a deterministic sample of a dataset version, itself a version", lambda: SampleConfig,
             ("dataset",), (), _fixed("dataset"), "factory.runtime._steps_data:sample"),
    StepType("train", "a Ray Train job on the input dataset, packaged as a candidate", _training,
             ("dataset",), (), _fixed(*_MODEL_OUTPUTS), "factory.runtime._steps_model:train", cpus=0.0,
             is_model=False),
    StepType("tune", "a Ray Tune sweep on the input dataset; the best trial packaged", _sweep,
             ("dataset",), (), _fixed(*_MODEL_OUTPUTS), "factory.runtime._steps_model:tune", cpus=0.0,
             is_model=False),
    StepType("features", "a point-in-time training set: the input rows joined against feature views",
             lambda: FeaturesConfig, None, (), _features_outputs, "factory.runtime._steps_data:features"),
    StepType("evaluate", "the input model's metrics on the input dataset, recorded as an evaluation",
             lambda: EvaluateConfig, ("model", "dataset"), (), _fixed("evaluation"),
             "factory.runtime._steps_model:evaluate"),
    StepType("gates", "a gate set run on a candidate: signed, logged; fails when a policy fails",
             lambda: GatesConfig, ("model",), ("dataset", "reference", "current"), _fixed("gate"),
             "factory.runtime._steps_model:gates", cpus=0.0),
    StepType("package", "a model validated against its contract and registered as a candidate",
             lambda: PackageConfig, (), ("model",), _fixed("model"), "factory.runtime._steps_model:package"),
    StepType("rollout", "a rollout of a candidate in an environment, hosted by the controller until it ends",
             _rollout_config, ("model",), (), _fixed("model", "rollout"), "factory.runtime._rollouts:rollout_step",
             where="controller", cpus=0.0),
    StepType("user", "your function (module:function): digests in, digests out", None, None, (),
             lambda config: None, "factory.runtime._steps_user:run_user"),
)}


def step_type(name: str) -> StepType:
    found = STEP_TYPES.get(name)
    if found is None:
        raise ValueError(f"{name!r} is not a step type: use one of {', '.join(STEP_TYPES)}")
    return found
