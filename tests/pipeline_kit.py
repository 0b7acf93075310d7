"""Step functions for pipeline tests: small, importable by Ray workers, each leaving a trace of
every call in a folder given by the caller (so tests count how often a step really ran)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa


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


# -- a point-in-time book for the features and evaluate steps -------------------------------

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def point_in_time_book(store) -> None:
    """Each customer's score flips sign on day 10; one application on day 5 and one on day 15, labelled
    by the score the customer had then, so only a point-in-time join gets every label right."""
    from factory.store.features import FeatureView

    n = 40
    score = np.random.default_rng(0).uniform(0.2, 2.0, n) * np.where(np.arange(n) % 3 == 0, -1, 1)
    ts = pa.timestamp("us", tz="UTC")
    events = pa.table({"customer": np.tile(np.arange(n), 2), "ts": pa.array([T0 + DAY] * n + [T0 + 10 * DAY] * n, ts),
                       "x": np.concatenate([score, -score]), "group": np.tile(np.arange(n) % 2, 2)})
    apps = pa.table({"id": np.arange(2 * n), "customer": np.tile(np.arange(n), 2),
                     "ts": pa.array([T0 + 5 * DAY] * n + [T0 + 15 * DAY] * n, ts),
                     "label": np.concatenate([score > 0, -score > 0]).astype(np.int64)})
    source = store.datasets.add(events, name="score-events", key=["customer", "ts"])
    store.features.register(FeatureView(name="scores", entities=("customer",), timestamp="ts", ttl=30 * DAY,
                                        features=("x", "group"), source=source.digest))
    store.datasets.add(apps, name="apps", key=["id"])


def point_in_time_pipeline(model: str, **kwargs):
    """features (the book's applications against view ``scores``, later half held out) -> evaluate ``model``."""
    from factory.runtime import Pipeline

    p = Pipeline("pit", **kwargs)
    f = p.step("features", "features", inputs={"dataset": "dataset:apps", "scores": "ref:feature-view/scores"},
               config={"dataset": "apps-training", "timestamp": "ts", "key": ["id"], "holdout": 0.5,
                       "holdout_dataset": "apps-holdout"})
    p.step("evaluate", "evaluate", inputs={"model": model, "dataset": f.output("holdout")},
           config={"label": "label", "features": ["x", "group"]})
    return p
