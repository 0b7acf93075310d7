"""A pipeline resolved for running: the ``Plan`` a pipeline run records as its config.

``resolve(store, spec)`` turns every input that is not another step's output into a digest
(refs, dataset names and files are looked up once, at submission), merges each step's
runtime environment with the pipeline's, and digests each step's code: a user function's
module file, or factory's own source for built-in steps. ``step_key`` is a step's
idempotency key: its type, function, config, input digests, code digest and runtime
environment. Resources and retries are not in it: they change how a step runs, not what
it computes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.errors import InvalidInputError, NotFoundError
from factory.runtime._spec import PipelineSpec, Resources, StepOutput, StepSpec, parse_input, topological_order

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["Plan", "PlannedStep", "resolve", "step_key", "factory_code_digest", "PLAN_FORMAT"]

PLAN_FORMAT = "factory.pipeline/v1"


class PlannedStep(BaseModel):
    """One step as it will run: inputs are digests or ``STEP.OUTPUT``, code is a digest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    function: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    after: tuple[str, ...] = ()
    resources: Resources = Resources()
    retries: int = 0
    retry_delay_s: float = 1.0
    timeout_s: float | None = None
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    code: str

    def step_inputs(self) -> dict[str, StepOutput | str]:
        return {name: parse_input(text) for name, text in self.inputs.items()}

    def upstream(self) -> set[str]:
        return {r.step for r in self.step_inputs().values() if isinstance(r, StepOutput)} | set(self.after)

    @property
    def where(self) -> str:
        from factory.runtime._step_types import step_type

        return step_type(self.type).where


class Plan(BaseModel):
    """A pipeline run's config: the resolved steps, in an order that respects their inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = PLAN_FORMAT
    name: str
    description: str = ""
    submitted_by: str
    steps: tuple[PlannedStep, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _graph(self) -> Plan:
        if self.format != PLAN_FORMAT:
            raise ValueError(f"plan format {self.format!r} is not {PLAN_FORMAT!r}: submit with this factory version")
        names = {s.name for s in self.steps}
        if len(names) != len(self.steps):
            raise ValueError("a step is named twice")
        for step in self.steps:
            unknown = step.upstream() - names
            if unknown:
                raise ValueError(f"step {step.name!r} waits for unknown step(s) {', '.join(sorted(unknown))}")
        topological_order(self.steps)  # type: ignore[arg-type]
        return self

    def step(self, name: str) -> PlannedStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise NotFoundError(f"pipeline {self.name!r} has no step {name!r}")

    def order(self) -> list[str]:
        return topological_order(self.steps)  # type: ignore[arg-type]

    def downstream(self, name: str) -> set[str]:
        """Every step that waits, directly or not, for ``name``."""
        found: set[str] = set()
        frontier = {name}
        while frontier:
            frontier = {s.name for s in self.steps if s.upstream() & frontier} - found
            found |= frontier
        return found


def step_key(step: PlannedStep, inputs: Mapping[str, str]) -> str:
    """The step's idempotency key: what it computes from which digests, with which code and environment."""
    from factory.store import canonical_json

    body = {"type": step.type, "function": step.function, "config": step.config, "inputs": dict(inputs),
            "code": step.code, "runtime_env": step.runtime_env}
    return f"pipeline-step:{step.type}:sha256:{hashlib.sha256(canonical_json(body)).hexdigest()}"


# -- resolving ---------------------------------------------------------------------------

def resolve(store: Store, spec: PipelineSpec, *, base_dir: str | os.PathLike[str] | None = None) -> Plan:
    """``spec`` with every input a digest or a step output, for ``store.settings.actor`` to submit.

    Relative ``file:`` paths are read from ``base_dir`` (the pipeline file's folder), else
    from the working directory.
    """
    steps = []
    for step in spec.steps:
        inputs = {name: _resolve_input(store, step, name, text, base_dir) for name, text in step.inputs.items()}
        env = spec.runtime_env.merged(step.runtime_env)
        steps.append(PlannedStep(
            name=step.name, type=step.type, function=step.function, config=step.config, inputs=inputs,
            after=step.after, resources=step.resources, retries=step.retries, retry_delay_s=step.retry_delay_s,
            timeout_s=step.timeout_s, runtime_env=env.to_ray(), code=_code_digest(step, env.working_dir, base_dir)))
    return Plan(name=spec.name, description=spec.description, submitted_by=store.settings.actor, steps=tuple(steps))


def _resolve_input(store: Store, step: StepSpec, name: str, text: str, base_dir: Any) -> str:
    ref = parse_input(text)
    if isinstance(ref, StepOutput):
        return str(ref)
    where = f"step {step.name!r} input {name!r}"
    kind, _, value = text.partition(":")
    try:
        if kind == "sha256":
            digest = store.artifacts.resolve(text)
            if not (store.artifacts.exists(digest) or store.blobs.exists(digest)):
                raise NotFoundError(f"{digest} is not in the store")
            return digest
        if kind == "ref":
            return store.refs.require(value)
        if kind == "dataset":
            return store.datasets.get(value).digest
        path = value if "://" in value or base_dir is None or os.path.isabs(value) else os.path.join(base_dir, value)
        return store.add_external(path, copy="://" not in value).digest
    except (InvalidInputError, NotFoundError) as exc:
        raise type(exc)(f"{where} ({text}): {exc}") from None


@functools.cache
def factory_code_digest() -> str:
    """The digest of factory's own source (every .py file of the package): the code of built-in steps."""
    import factory

    root = Path(factory.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + h.hexdigest()


def _code_digest(step: StepSpec, working_dir: str | None, base_dir: Any) -> str:
    function = step.function or step.config.get("generate") or step.config.get("builder")
    if function is None:
        return factory_code_digest()
    module = function.split(":", 1)[0]
    path = _module_file(module, working_dir, base_dir)
    if path is None:
        raise InvalidInputError(f"step {step.name!r}: cannot find module {module!r} here to digest its code: submit "
                                "from where it is importable, or set runtime_env.working_dir to its folder")
    h = hashlib.sha256(f"{function}\0".encode())
    h.update(Path(path).read_bytes())
    return "sha256:" + h.hexdigest()


def _module_file(module: str, working_dir: str | None, base_dir: Any) -> str | None:
    if working_dir and "://" not in working_dir:
        root = Path(working_dir if os.path.isabs(working_dir) or base_dir is None else os.path.join(base_dir,
                                                                                                   working_dir))
        for candidate in (root.joinpath(*module.split(".")).with_suffix(".py"),
                          root.joinpath(*module.split("."), "__init__.py")):
            if candidate.is_file():
                return str(candidate)
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None) if found is not None else None
    return origin if origin and os.path.isfile(origin) else None
