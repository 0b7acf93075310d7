"""One attempt of one step, as it travels to where it runs and comes back.

``StepTask`` is what the controller sends (the step, its input digests, the store to open,
the attempt); ``execute`` runs it in a Ray worker (or, for controller steps, in the
controller) by calling the step type's code with a ``StepContext``; ``StepResult`` is what
comes back: output digests, metrics and details, recorded by the controller on the step's
run. Workers never write to the run themselves: the controller owns it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError

if TYPE_CHECKING:
    from factory.runtime._plan import PlannedStep
    from factory.settings import Settings
    from factory.store import Store

__all__ = ["StepTask", "StepResult", "StepContext", "execute", "open_store", "import_function"]


@dataclass(frozen=True)
class StepTask:
    """One attempt of a step: what to run, on which digests, in which store, as whom."""

    pipeline: str
    pipeline_run: str
    step: PlannedStep
    run_id: str
    inputs: Mapping[str, str]
    attempt: int
    home: str
    settings: Settings

    @property
    def label(self) -> str:
        return f"{self.pipeline}/{self.step.name}"


@dataclass(frozen=True)
class StepResult:
    """What an attempt made: outputs by name (digests), metrics by step, and details for its run's record."""

    outputs: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


class StepContext:
    """What a step's code sees: the store (acting as the pipeline's submitter), its config and inputs.

    A user function declares a ``context`` parameter to receive it.
    """

    def __init__(self, task: StepTask, store: Store, **services: Any):
        self.task = task
        self.store = store
        self.services = services
        self._metrics: dict[int, dict[str, float]] = {}
        self.details: dict[str, Any] = {}

    step = property(lambda self: self.task.step.name)
    pipeline = property(lambda self: self.task.pipeline)
    pipeline_run = property(lambda self: self.task.pipeline_run)
    run_id = property(lambda self: self.task.run_id)
    attempt = property(lambda self: self.task.attempt)
    config = property(lambda self: dict(self.task.step.config))
    inputs = property(lambda self: dict(self.task.inputs))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Metric values recorded on the step's run (at ``step``) when the attempt succeeds."""
        self._metrics.setdefault(int(step), {}).update({str(k): float(v) for k, v in metrics.items()})

    def result(self, outputs: Mapping[str, str] | None) -> StepResult:
        return StepResult(outputs=dict(outputs or {}), metrics=self._metrics, details=self.details)


@functools.lru_cache(maxsize=8)
def open_store(home: str, settings: Settings) -> Store:
    """The store a worker opens for a step (kept per process: later steps reuse it)."""
    from factory.store import Store

    return Store(home, settings=settings)


def import_function(path: str, what: str) -> Any:
    """The function named ``module:function``, or a user error saying why it cannot be found."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"{what}: cannot import {module_name!r} ({exc}): make it importable where the step "
                                "runs (install it, or set runtime_env.working_dir / py_modules)") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise InvalidInputError(f"{what}: {module_name!r} has no function {name!r}")
    return function


def execute(task: StepTask, store: Store | None = None, **services: Any) -> StepResult:
    """Run one attempt of ``task`` here and return what it made."""
    from factory.runtime._step_types import step_type

    store = store if store is not None else open_store(task.home, task.settings)
    run = import_function(step_type(task.step.type).run, f"step {task.step.name!r}")
    context = StepContext(task, store, **services)
    outputs = run(context)
    return outputs if isinstance(outputs, StepResult) else context.result(outputs)
