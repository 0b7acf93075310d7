"""The ``user`` step: your function, called with its inputs (digests) and config as keyword arguments.

It returns its outputs: a mapping of output name to digest (each must be in the store), a
single digest (the output ``result``), or None (no outputs). A parameter named ``context``
receives the ``StepContext`` (the store, the step's run id, ``log_metrics``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError
from factory.runtime._task import import_function

if TYPE_CHECKING:
    from factory.runtime._task import StepContext

__all__ = ["run_user", "user_outputs"]


def user_outputs(step: str, value: Any) -> dict[str, str]:
    """A user function's return value as outputs by name, or a user error saying what to return."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"result": value}
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise InvalidInputError(f"step {step!r} returned {type(value).__name__}: a user step returns a digest, a mapping "
                            "of output name to digest, or None")


def run_user(ctx: StepContext) -> dict[str, str]:
    """Call the step's function and return its outputs."""
    step = ctx.task.step
    function = import_function(step.function or "", f"step {step.name!r}")
    kwargs: dict[str, Any] = {**ctx.config, **ctx.inputs}
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "context" in parameters:
        kwargs["context"] = ctx
    return user_outputs(step.name, function(**kwargs))
