"""Pipelines as code: ``Pipeline`` and ``Step``, which build the same ``PipelineSpec`` a YAML file does.

::

    from factory.runtime import Pipeline

    p = Pipeline("credit", runtime_env={"pip": ["scikit-learn==1.5.2"]})
    raw = p.step("raw", "ingest", inputs={"source": Path("credit.csv")}, config={"dataset": "credit", "key": ["id"]})
    clean = p.user("clean", "mypkg.steps:clean", inputs={"raw": raw.output("dataset")}, retries=2)
    train = p.step("train", "train", inputs={"dataset": clean.output("dataset")}, config={...})
    p.step("gate", "gates", inputs={"model": train.output("model")}, config={"set": "dev"})
    run_id = controller.submit(p)

Nothing is checked until ``spec()`` (which ``submit`` calls): then the whole graph is,
exactly as for YAML, and errors name the step and field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePath
from typing import Any

from factory.errors import InvalidInputError
from factory.runtime._spec import PipelineSpec, Resources, RuntimeEnv, StepOutput, load_pipeline, parse_pipeline

__all__ = ["Pipeline", "Step", "StepOutput"]

InputValue = str | StepOutput | os.PathLike[str]


def _input_text(value: InputValue | Step) -> str:
    if isinstance(value, Step):
        raise InvalidInputError(f"an input names one output of step {value.name!r}: write "
                                f"{value.name}.output('NAME')")
    if isinstance(value, StepOutput):
        return str(value)
    if isinstance(value, PurePath | os.PathLike):
        return "file:" + os.fspath(value)
    if isinstance(value, str):
        return value
    raise InvalidInputError(f"an input is a digest, STEP.OUTPUT, ref:..., dataset:..., file:... or a path, "
                            f"not {type(value).__name__}")


def function_path(function: str | Callable[..., Any]) -> str:
    """``module:function`` for a function given as text or as a top-level function object."""
    if isinstance(function, str):
        return function
    module, name = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "." in name or "<" in name:
        raise InvalidInputError(f"{function!r} cannot be found by name on the cluster: define it at the top level "
                                "of an importable module and pass it (or 'module:function')")
    return f"{module}:{name}"


class Step:
    """A step being declared; ``output(name)`` names one of its outputs for another step's inputs."""

    def __init__(self, pipeline: Pipeline, fields: dict[str, Any]):
        self._pipeline = pipeline
        self._fields = fields

    @property
    def name(self) -> str:
        return self._fields["name"]

    @property
    def type(self) -> str:
        return self._fields["type"]

    def output(self, name: str) -> StepOutput:
        return StepOutput(self.name, name)

    def __repr__(self) -> str:
        return f"Step({self.name!r}, type={self.type!r})"


class Pipeline:
    """A pipeline declared in Python. ``spec()`` checks it and returns the ``PipelineSpec``."""

    def __init__(self, name: str, *, description: str = "",
                 runtime_env: RuntimeEnv | Mapping[str, Any] | None = None):
        self.name = name
        self.description = description
        self.runtime_env = runtime_env
        self._steps: list[Step] = []

    def step(self, name: str, type: str = "user", *, function: str | Callable[..., Any] | None = None,
             inputs: Mapping[str, InputValue] | None = None, config: Mapping[str, Any] | None = None,
             after: Iterable[str | Step] = (), resources: Resources | Mapping[str, Any] | None = None,
             retries: int = 0, retry_delay_s: float = 1.0, timeout_s: float | None = None,
             runtime_env: RuntimeEnv | Mapping[str, Any] | None = None) -> Step:
        """Add a step of ``type`` (a built-in type, or ``user`` with ``function``)."""
        fields: dict[str, Any] = {
            "name": name, "type": type, "inputs": {k: _input_text(v) for k, v in (inputs or {}).items()},
            "config": dict(config or {}), "after": [a.name if isinstance(a, Step) else a for a in after],
            "retries": retries, "retry_delay_s": retry_delay_s,
        }
        if function is not None:
            fields["function"] = function_path(function)
        if resources is not None:
            fields["resources"] = resources.model_dump() if isinstance(resources, Resources) else dict(resources)
        if timeout_s is not None:
            fields["timeout_s"] = timeout_s
        if runtime_env is not None:
            fields["runtime_env"] = runtime_env.model_dump() if isinstance(runtime_env, RuntimeEnv) else dict(runtime_env)
        step = Step(self, fields)
        self._steps.append(step)
        return step

    def user(self, name: str, function: str | Callable[..., Any], **kwargs: Any) -> Step:
        """Add a user step running ``function`` (``module:function``, or the function itself)."""
        return self.step(name, "user", function=function, **kwargs)

    def spec(self) -> PipelineSpec:
        """The pipeline checked whole: config per step type, references, cycles."""
        data: dict[str, Any] = {"name": self.name, "description": self.description,
                                "steps": [dict(s._fields) for s in self._steps]}
        if self.runtime_env is not None:
            env = self.runtime_env
            data["runtime_env"] = env.model_dump() if isinstance(env, RuntimeEnv) else dict(env)
        return parse_pipeline(data, source=f"pipeline {self.name!r}")

    def to_yaml(self) -> str:
        """The pipeline as YAML that ``load`` (and ``factory run``) read back to the same spec."""
        import yaml

        return yaml.safe_dump(self.spec().model_dump(mode="json", exclude_defaults=True), sort_keys=False)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> PipelineSpec:
        """A pipeline from its YAML file, checked whole."""
        return load_pipeline(path)
