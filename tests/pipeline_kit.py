"""Step functions for pipeline tests: small, importable by Ray workers, each leaving a trace of
every call in a folder given by the caller (so tests count how often a step really ran)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _note(calls: str | None, step: str) -> int:
    """Record one call of ``step`` under ``calls``; the number of calls so far."""
    if not calls:
        return 0
    folder = Path(calls)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{step}-{time.time_ns()}-{os.getpid()}").touch()
    return len(list(folder.glob(f"{step}-*")))


def calls(folder: str | os.PathLike[str], step: str) -> int:
    """How often ``step`` ran, by its traces in ``folder``."""
    return len(list(Path(folder).glob(f"{step}-*")))


def make(context, text: str, calls: str | None = None, sleep_s: float = 0.0):
    """A blob holding ``text``."""
    _note(calls, context.step)
    if sleep_s:
        time.sleep(sleep_s)
    return {"blob": context.store.put_blob(text.encode()).digest}


def join(context, calls: str | None = None, sleep_s: float = 0.0, **inputs: str):
    """A blob holding its inputs' bytes, in input-name order (the inputs are its parents)."""
    _note(calls, context.step)
    if sleep_s:
        time.sleep(sleep_s)
    data = b"|".join(context.store.blobs.get(inputs[name]) for name in sorted(inputs))
    return {"blob": context.store.put_blob(data, parents=sorted(inputs.values())).digest}


def fail(context, calls: str | None = None, **inputs: str):
    """Always fails, as a bug would (a retry does not help)."""
    _note(calls, context.step)
    raise RuntimeError("the step's code is broken")


def flaky(context, failures: int, calls: str | None = None, **inputs: str):
    """Fails its first ``failures`` calls, then makes a blob."""
    if _note(calls, context.step) <= failures:
        raise ConnectionError("a transient failure")
    return {"blob": context.store.put_blob(b"flaky ok").digest}


def bad_output(context, **inputs: str):
    """Returns a number where digests are expected."""
    return 42


def odd_details(context):
    """Makes a blob but leaves details that are not JSON for its run's record."""
    context.details["when"] = object()
    return {"blob": context.store.put_blob(b"odd").digest}
