"""A pipeline as users write it (YAML, or built by ``Pipeline``): steps, their inputs, resources,
retries and runtime environment, checked whole before anything runs.

Every model is pydantic, frozen, ``extra="forbid"``. ``PipelineSpec.model_validate`` checks
each step's config against its type, that every input names a known step and one of its
outputs, that ``after`` names known steps, and that the steps form no cycle. Errors name
the step and the field (``step 'train': config.epochs: ...``), via ``parse_pipeline``.

An input is written as text:

- ``<step>.<output>``: an output of another step (``train.model``);
- ``sha256:<hex>``: a digest (or a unique prefix of at least 6 hex digits);
- ``ref:<name>``: what a ref points at when the pipeline is submitted (``ref:model/credit/prod``);
- ``dataset:<name>[@<version>]``: a dataset version (its latest without a version);
- ``file:<path>``: a local file or a URI, recorded (and copied) as an ``external`` artifact.

Everything but step outputs is resolved to a digest at submission, so a run's record
holds digests only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factory.errors import InvalidInputError
from factory.runtime._step_types import STEP_TYPES, StepType, step_type

__all__ = [
    "STEP_NAME",
    "Resources",
    "RuntimeEnv",
    "StepSpec",
    "PipelineSpec",
    "StepOutput",
    "parse_input",
    "parse_pipeline",
    "load_pipeline",
    "topological_order",
]

STEP_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_OUTPUT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_PIPELINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*")
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*")
_PREFIXES = ("sha256:", "ref:", "dataset:", "file:")
MAX_PIPELINE_BYTES = 1 << 20


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepOutput(NamedTuple):
    """An output of a step, as another step's input: ``train.model``."""

    step: str
    output: str

    def __str__(self) -> str:
        return f"{self.step}.{self.output}"


def parse_input(text: str) -> StepOutput | str:
    """``text`` as a step output, or as itself when it is a digest, ref, dataset or file to resolve."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an input must be text: STEP.OUTPUT, sha256:..., ref:NAME, dataset:NAME[@V] or file:PATH")
    if text.startswith(_PREFIXES):
        if len(text.split(":", 1)[1].strip()) == 0:
            raise ValueError(f"{text!r} names nothing after its prefix")
        return text
    step, dot, output = text.partition(".")
    if not dot or not STEP_NAME.fullmatch(step) or not _OUTPUT.fullmatch(output):
        raise ValueError(f"{text!r} is not an input: write STEP.OUTPUT (e.g. train.model), sha256:..., ref:NAME, "
                         "dataset:NAME[@V] or file:PATH")
    return StepOutput(step, output)


class Resources(_Frozen):
    """What one attempt of a step holds on the cluster (None: the step type's default)."""

    cpus: float | None = Field(None, ge=0, le=1024)
    gpus: float = Field(0, ge=0, le=64)
    memory_mb: int | None = Field(None, ge=1, le=4 << 20)
    custom: dict[str, float] = Field(default_factory=dict)

    @field_validator("custom")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if not name or name in ("CPU", "GPU", "memory") or amount < 0:
                raise ValueError(f"custom resource {name!r}: {amount} is not a custom resource amount (use cpus, "
                                 "gpus and memory_mb for those, and amounts >= 0)")
        return value


class RuntimeEnv(_Frozen):
    """The Ray ``runtime_env`` a step runs in: pinned pip requirements, environment variables, code."""

    pip: tuple[str, ...] = ()
    env_vars: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    py_modules: tuple[str, ...] = ()

    @field_validator("pip")
    @classmethod
    def _pinned(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for requirement in value:
            if not _PIN.fullmatch(requirement.replace(" ", "")):
                raise ValueError(f"pip requirement {requirement!r} is not pinned: write NAME==VERSION "
                                 "(e.g. scikit-learn==1.5.2), so every run gets the same dependencies")
        return value

    @field_validator("env_vars")
    @classmethod
    def _no_identity(cls, value: dict[str, str]) -> dict[str, str]:
        if "FACTORY_ACTOR" in value:
            raise ValueError("FACTORY_ACTOR cannot be set for a step: steps act as whoever submitted the pipeline")
        return value

    def merged(self, other: RuntimeEnv | None) -> RuntimeEnv:
        """This environment with ``other``'s settings on top (its env vars and pins win by name)."""
        if other is None:
            return self
        pins = {_pin_name(p): p for p in self.pip} | {_pin_name(p): p for p in other.pip}
        return RuntimeEnv(pip=tuple(pins.values()), env_vars={**self.env_vars, **other.env_vars},
                          working_dir=other.working_dir or self.working_dir,
                          py_modules=other.py_modules or self.py_modules)

    def to_ray(self) -> dict[str, Any]:
        """The ``runtime_env`` dict Ray takes (empty when nothing is set)."""
        out: dict[str, Any] = {}
        if self.pip:
            out["pip"] = list(self.pip)
        if self.env_vars:
            out["env_vars"] = dict(self.env_vars)
        if self.working_dir:
            out["working_dir"] = self.working_dir
        if self.py_modules:
            out["py_modules"] = list(self.py_modules)
        return out


def _pin_name(requirement: str) -> str:
    return requirement.split("==", 1)[0].split("[", 1)[0].strip().lower().replace("_", "-")


class StepSpec(_Frozen):
    """One step: its type (or a user function), inputs, config, resources, retries and environment."""

    name: str = Field(description="lowercase letters, digits, '_' and '-'")
    type: str = Field(description=f"one of {', '.join(STEP_TYPES)}")
    function: str | None = Field(None, description="module:function, for user steps")
    inputs: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    after: tuple[str, ...] = Field((), description="steps that must succeed first, beyond those whose outputs it reads")
    resources: Resources = Resources()
    retries: int = Field(0, ge=0, le=20, description="attempts after the first when an attempt fails")
    retry_delay_s: float = Field(1.0, ge=0, le=3600, description="wait before the first retry; doubles each time")
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400, description="an attempt running longer fails")
    runtime_env: RuntimeEnv | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STEP_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a step name: use lowercase letters, digits, '_' and '-', "
                             "starting with a letter")
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        step_type(value)
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _OUTPUT.fullmatch(name):
                raise ValueError(f"input name {name!r}: use letters, digits, '_' and '-'")
            try:
                parse_input(text)
            except ValueError as exc:
                raise ValueError(f"input {name!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _by_type(self) -> StepSpec:
        kind = self.kind
        if kind.name == "user":
            if self.function is None or not _FUNCTION.fullmatch(self.function):
                raise ValueError(f"function {self.function!r}: a user step names its function as module:function "
                                 "(e.g. mypkg.steps:clean)")
        elif self.function is not None:
            raise ValueError(f"function: only user steps take one (this step is of type {kind.name})")
        normalized = kind.check(self.config, tuple(self.inputs))
        object.__setattr__(self, "config", normalized)
        return self

    @property
    def kind(self) -> StepType:
        return step_type(self.type)

    def step_inputs(self) -> dict[str, StepOutput | str]:
        return {name: parse_input(text) for name, text in self.inputs.items()}

    def upstream(self) -> set[str]:
        """The steps this one waits for: those whose outputs it reads, and those named in ``after``."""
        return {ref.step for ref in self.step_inputs().values() if isinstance(ref, StepOutput)} | set(self.after)


class PipelineSpec(_Frozen):
    """A named graph of steps, with the runtime environment they share."""

    name: str
    description: str = ""
    runtime_env: RuntimeEnv = RuntimeEnv()
    steps: tuple[StepSpec, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _PIPELINE.fullmatch(value):
            raise ValueError(f"{value!r} is not a pipeline name: use letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        by_name: dict[str, StepSpec] = {}
        for step in self.steps:
            if step.name in by_name:
                raise ValueError(f"step {step.name!r} is defined twice: give each step its own name")
            by_name[step.name] = step
        for step in self.steps:
            for input_name, ref in step.step_inputs().items():
                if not isinstance(ref, StepOutput):
                    continue
                source = by_name.get(ref.step)
                if source is None:
                    raise ValueError(f"step {step.name!r}: input {input_name!r} reads {ref}, but there is no step "
                                     f"{ref.step!r} (steps: {', '.join(by_name)})")
                outputs = source.kind.outputs(source.config)
                if outputs is not None and ref.output not in outputs:
                    raise ValueError(f"step {step.name!r}: input {input_name!r} reads {ref}, but a {source.type} step "
                                     f"has no output {ref.output!r} (it has: {', '.join(sorted(outputs))})")
            for name in step.after:
                if name not in by_name:
                    raise ValueError(f"step {step.name!r}: after names {name!r}, which is not a step")
        topological_order(self.steps)
        return self

    def step(self, name: str) -> StepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise InvalidInputError(f"pipeline {self.name!r} has no step {name!r}")


def topological_order(steps: Iterable[StepSpec]) -> list[str]:
    """Step names, each after every step it waits for; a cycle is refused, naming its steps."""
    steps = list(steps)
    waits = {s.name: s.upstream() & {t.name for t in steps} for s in steps}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(steps):
        ready = [s.name for s in steps if s.name not in done and waits[s.name] <= done]
        if not ready:
            stuck = [s.name for s in steps if s.name not in done]
            raise ValueError(f"steps {', '.join(_cycle(stuck, waits))} wait for each other in a cycle: "
                             "remove one of those inputs or 'after' entries")
        order.extend(ready)
        done.update(ready)
    return order


def _cycle(stuck: list[str], waits: Mapping[str, set[str]]) -> list[str]:
    """One cycle among ``stuck`` steps, in order (a -> b -> a)."""
    path: list[str] = []
    node = stuck[0]
    while node not in path:
        path.append(node)
        node = sorted(waits[node] & set(stuck))[0]
    cycle = path[path.index(node):]
    return [*cycle, cycle[0]]


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """A location in the pipeline document as a person reads it: ``step 'train': config.epochs``."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "steps" and isinstance(parts[1], int):
        steps = data.get("steps") if isinstance(data, Mapping) else None
        name = None
        if isinstance(steps, list) and parts[1] < len(steps) and isinstance(steps[parts[1]], Mapping):
            name = steps[parts[1]].get("name")
        head = f"step {name!r}" if isinstance(name, str) else f"step #{parts[1] + 1}"
        rest = ".".join(str(p) for p in parts[2:])
        return f"{head}: {rest}" if rest else head
    return ".".join(str(p) for p in parts)


def parse_pipeline(data: Any, *, source: str = "the pipeline") -> PipelineSpec:
    """A ``PipelineSpec`` from plain data, or ``InvalidInputError`` naming each bad step and field."""
    if isinstance(data, PipelineSpec):
        return data
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{source} must be a mapping with 'name' and 'steps', not {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        errors = exc.errors(include_url=False)
        if len(errors) > 1:  # a step refused also leaves 'steps' short of one: say only what is wrong with it
            errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) == ("steps",))]
        for error in errors:
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "is not a known field: check its spelling and indentation"
            elif error["type"] == "missing":
                message = "is required"
            where = _where(tuple(error["loc"]), data)
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidInputError(f"{source} is not a valid pipeline: " + "; ".join(problems)) from None


def load_pipeline(path: str | os.PathLike[str]) -> PipelineSpec:
    """The pipeline in the YAML file at ``path``, checked whole."""
    from factory._untrusted import load_yaml

    text = os.fspath(path)
    try:
        with open(text, "rb") as f:
            raw = f.read(MAX_PIPELINE_BYTES + 1)
    except FileNotFoundError:
        raise InvalidInputError(f"no pipeline file at {text}: check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{text} is a folder: give the pipeline's YAML file") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {text}: {exc.strerror or exc}") from None
    return parse_pipeline(load_yaml(raw, what=text, max_bytes=MAX_PIPELINE_BYTES), source=text)
