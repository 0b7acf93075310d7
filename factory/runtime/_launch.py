"""Where step attempts run: ``ThreadLauncher`` (in this process: the controller's own steps, and
tests without Ray) and ``RayLauncher`` (one Ray task per attempt, with the step's resources and
``runtime_env``). Retries are the scheduler's: Ray never retries an attempt on its own, so each
attempt is one event on the step's run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from factory.runtime._task import StepResult, StepTask, execute

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["ThreadLauncher", "RayLauncher", "ray_options"]

log = logging.getLogger(__name__)

Done = Callable[[StepResult | BaseException], None]


def _report(attempt: Callable[[], StepResult], done: Done) -> None:
    """Run ``attempt`` and hand its result, or whatever it raised, to ``done``."""
    try:
        result = attempt()
    except BaseException as exc:  # noqa: BLE001 - every failure is the attempt's outcome
        done(exc)
    else:
        done(result)


def _on_thread(name: str, attempt: Callable[[], StepResult], done: Done) -> None:
    threading.Thread(target=_report, args=(attempt, done), name=name, daemon=True).start()


class _Handle:
    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.ref: Any = None


class ThreadLauncher:
    """Runs each attempt on a thread of this process, with ``store`` and ``services`` (plus a
    ``cancel`` event, set when the attempt is cancelled) in its ``StepContext``."""

    def __init__(self, store: Store | None = None, **services: Any):
        self.store = store
        self.services = services

    def launch(self, task: StepTask, done: Done) -> _Handle:
        handle = _Handle()
        _on_thread(f"step-{task.label}-{task.attempt}",
                   lambda: execute(task, self.store, cancel=handle.cancel, **self.services), done)
        return handle

    def cancel(self, handle: _Handle | None) -> None:
        if handle is not None:
            handle.cancel.set()


def _run_step(task: StepTask) -> StepResult:
    return execute(task)


def ray_options(task: StepTask) -> dict[str, Any]:
    """The Ray task options of one attempt: its resources, ``runtime_env`` and name; no Ray retries."""
    step = task.step
    resources = step.resources
    from factory.runtime._step_types import step_type

    options: dict[str, Any] = {
        "num_cpus": resources.cpus if resources.cpus is not None else step_type(step.type).cpus,
        "num_gpus": resources.gpus,
        "max_retries": 0,
        "retry_exceptions": False,
        "name": f"{task.label}#{task.attempt}",
    }
    if resources.memory_mb is not None:
        options["memory"] = resources.memory_mb * 1024 * 1024
    if resources.custom:
        options["resources"] = dict(resources.custom)
    if step.runtime_env:
        options["runtime_env"] = dict(step.runtime_env)
    return options


class RayLauncher:
    """Runs each attempt as one Ray task; a thread per attempt waits for it and reports."""

    def __init__(self) -> None:
        import ray

        self._remote = ray.remote(_run_step)

    def launch(self, task: StepTask, done: Done) -> _Handle:
        import ray

        handle = _Handle()
        handle.ref = self._remote.options(**ray_options(task)).remote(task)
        _on_thread(f"wait-{task.label}-{task.attempt}", lambda: ray.get(handle.ref), done)
        return handle

    def cancel(self, handle: _Handle | None) -> None:
        import ray

        if handle is not None and handle.ref is not None:
            handle.cancel.set()
            try:
                ray.cancel(handle.ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                log.debug("cancel of a finished step task", exc_info=True)
