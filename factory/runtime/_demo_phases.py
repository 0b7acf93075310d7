"""The factory cycle as phases: plain functions over the public APIs, each timed.

Every phase takes the ``Cycle`` (the store, the options, what earlier phases made) and
returns what it made, so a pipeline runner can call the same functions as steps. The
console output is the ``Progress`` given in; nothing here prints directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factory.runtime._demo_data import ACTIVITY, ENTITY, FEATURES, LABEL, PROFILE, SENSITIVE, TTL, generate

__all__ = ["Options", "Cycle", "RolloutOutcome", "Progress", "Labelled"]

MODEL = "credit-risk"
INPUT = "features"
VIEWS = ("customer-profile", "card-activity")
HOLDOUT = 0.2  # the most recent fifth of the applications: the evaluation set the gates judge on
CORRUPT = "factory.runtime._demo_data:corrupt_labels"  # the faulty candidate's features transform


@dataclass(frozen=True)
class Options:
    """Sizes and knobs of one demo run; ``quick()`` is the reduced but real version the tests run."""

    customers: int = 8000
    applications: int = 8000
    epochs: int = 3
    learning_rates: tuple[float, ...] = (0.01, 0.03)  # the sweep's grid: one trial each
    rate: float = 60.0
    window_s: float = 3.0
    min_requests: int = 30
    min_compared: int = 100
    steps: tuple[float, ...] = (10.0, 50.0, 100.0)
    corrupt_above: float = 0.6
    # Ray's CPUs are scheduling units, not cores. A replica of the demo's model reserves a whole
    # CPU by its contract yet uses a sliver; 4 logical CPUs on a 2-core machine let two serving
    # versions, the sweep's two trials at once and a training run beside a rollout be scheduled.
    cluster_cpus: int = 4
    # Workers of each sweep trial, and of the faulty candidate's run. Nearly all of a Train run on
    # 2 cores is process start-up (each worker imports torch and Ray Train): two trials of one
    # worker each start half the processes of two 2-worker trials, and the faulty candidate, which
    # trains beside the good one's rollout, took 43-52 s there with 2 workers against 22-25 s alone.
    # The baseline still trains with 2 (DDP).
    sweep_workers: int = 1
    faulty_workers: int = 1
    accuracy_min: float = 0.75
    seed: int = 7
    faulty: bool = True  # the deliberately worse candidate and its automatic rollback

    @classmethod
    def quick(cls) -> Options:
        return cls(customers=4000, applications=4000, epochs=2, window_s=2.0, steps=(25.0, 100.0))

    @classmethod
    def smoke(cls) -> Options:
        """The cheapest whole path: quick's data, a one-trial sweep, one canary step, no faulty candidate."""
        return dataclasses.replace(cls.quick(), learning_rates=(0.03,), steps=(100.0,), faulty=False)


class Progress:
    """Where phases report: ``phase(name)`` opens a timed phase, ``note`` adds a line, ``value`` a key/value."""

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def note(self, text: str) -> None:
        pass

    def value(self, label: str, value: object) -> None:
        pass


class Labelled(Progress):
    """The progress of work running beside the current phase: its lines carry ``label``, it opens no phase."""

    def __init__(self, inner: Progress, label: str):
        self.inner, self.label = inner, label

    def note(self, text: str) -> None:
        self.inner.note(f"[{self.label}] {text}")

    def value(self, label: str, value: object) -> None:
        self.inner.note(f"[{self.label}] {label}: {value}")


@dataclass
class RolloutOutcome:
    """What one rollout did, for the summary and the report."""

    label: str
    run: str
    candidate: str
    incumbent: str
    state: str
    events: list[dict[str, Any]]
    applied: list[tuple[float, dict[str, float], dict[str, float]]]
    seconds: list[Any]
    started: float
    ended: float
    reason: str = ""


@dataclass
class Cycle:
    """The demo's state: the store, the options and everything the phases made so far."""

    store: Any
    options: Options
    progress: Progress = field(default_factory=Progress)
    model: str = MODEL
    timings: dict[str, float] = field(default_factory=dict)
    made: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    rollouts: list[RolloutOutcome] = field(default_factory=list)
    endpoint: dict[str, str] = field(default_factory=dict)
    cluster: Any = None

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        with self.progress.phase(name):
            yield
        self.timings[name] = time.perf_counter() - started

    def beside(self, label: str) -> Cycle:
        """This cycle for work running beside the current phase (on another thread): labelled progress lines."""
        return dataclasses.replace(self, progress=Labelled(self.progress, label))


# -- data ------------------------------------------------------------------------------------
def book_until(customers: int, applications: int, *, month: int, seed: int):
    """The book of months 0 to ``month``: each month's rows after the earlier ones (a month more grows it)."""
    import pyarrow as pa

    months = [generate(customers, applications, month=m, seed=seed) for m in range(month + 1)]
    if len(months) == 1:
        return months[0]
    return type(months[0])(*(pa.concat_tables(parts) for parts in
                             zip(*((b.profiles, b.activity, b.applications) for b in months), strict=True)))


def store_book(store, book) -> dict[str, Any]:
    """The book's three tables stored as new versions of their datasets, and the feature views moved to them."""
    from factory.store.features import FeatureView

    profiles = store.datasets.add(book.profiles, name="customer-profiles", key=[ENTITY, "ts"])
    activity = store.datasets.add(book.activity, name="card-activity", key=[ENTITY, "ts"])
    apps = store.datasets.add(book.applications, name="applications", key=["application_id"])
    views = [store.features.register(FeatureView(name=name, entities=(ENTITY,), timestamp="ts", ttl=TTL,
                                                 features=features, source=source.digest))
             for name, features, source in ((VIEWS[0], PROFILE, profiles), (VIEWS[1], ACTIVITY, activity))]
    return {"profiles": profiles, "activity": activity, "applications": apps, "views": views}


def ingest(cycle: Cycle, month: int) -> dict[str, Any]:
    """The book up to ``month`` stored as new versions of its three datasets, and the feature views moved to them."""
    opts = cycle.options
    made = store_book(cycle.store, book_until(opts.customers, opts.applications, month=month, seed=opts.seed))
    for version in (made["profiles"], made["activity"], made["applications"]):
        cycle.progress.value(f"dataset {version.name}", f"v{version.version} {version.num_rows:,} rows "
                                                        f"{version.digest[:19]}")
    return made


def training_set(cycle: Cycle, data: dict[str, Any], *, name: str = "credit-training"):
    """The labelled applications joined point-in-time against the feature views: a dataset version.

    The most recent fifth of the applications is held out as the evaluation set the
    gates judge on (as the ``features`` step of the candidates' pipelines does).
    """
    import pyarrow.compute as pc

    from factory.runtime._training_sets import point_in_time_set

    made = point_in_time_set(cycle.store, data["applications"].digest, list(VIEWS), name=name, timestamp="ts",
                             key=["application_id"], holdout=HOLDOUT, holdout_name="credit-evaluation")
    trained, evaluation = made.dataset, made.holdout
    train = cycle.store.datasets.read(trained, columns=[LABEL])
    rate = pc.mean(train[LABEL]).as_py()
    cycle.progress.value("training set", f"{trained.num_rows:,} rows, default rate {rate:.1%}, "
                                         f"{trained.digest[:19]}")
    cycle.progress.value("evaluation set", f"{evaluation.num_rows:,} rows {evaluation.digest[:19]}")
    return trained, evaluation


# -- training ----------------------------------------------------------------------------------
def training_config(cycle: Cycle, dataset: str, *, lr: float = 0.02, hidden: tuple[int, ...] = (16,),
                    workers: int = 2):
    from factory.train import TrainingConfig

    return TrainingConfig.model_validate({
        "name": MODEL, "dataset": dataset, "label": LABEL, "features": list(FEATURES),
        "architecture": "mlp-classifier@1",
        "architecture_config": {"in_features": len(FEATURES), "out_features": 2, "hidden": list(hidden)},
        "hyperparameters": {"lr": lr, "batch_size": 64},
        "compute": {"workers": workers, "cpus_per_worker": 0.25},
        "epochs": cycle.options.epochs, "seed": cycle.options.seed,
    })


def train_model(cycle: Cycle, dataset: str, **overrides: Any):
    """One Ray Train run with 2 workers (DDP), packaged behind its contract."""
    from factory.train import train

    def epoch(report) -> None:
        if report.end_of_epoch:
            cycle.progress.note(f"epoch {report.epoch:.0f}/{report.epochs}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in sorted(report.metrics.items()) if k.startswith(("train_", "val_"))))

    result = train(training_config(cycle, dataset, **overrides), store=cycle.store, progress=epoch)
    cycle.progress.value("model", f"{result.model[:19]} val_accuracy {result.metrics.get('val_accuracy', 0):.3f}")
    return result


def _only_latency_failed(result) -> bool:
    return bool(result.failed) and all(o.policy == "contract" and "p99" in o.result.reason for o in result.failed)


# -- gates -------------------------------------------------------------------------------------
def gate(cycle: Cycle, model: str, *, evaluation: str, reference: str, required: bool = True):
    """The prod gate set on ``model``: every result signed, logged and recorded as an attestation.

    ``required``: a failed gate stops the demo with ``AdmissionDeniedError`` naming each
    failure (prod would refuse the package anyway); the remediation tickets stay open.
    """
    from factory.gates import GateInputs, run_gate

    inputs = GateInputs(dataset=evaluation, label=LABEL, features=FEATURES, sensitive=SENSITIVE,
                        thresholds={"accuracy": {"min": cycle.options.accuracy_min}},
                        reference=reference, current=evaluation)
    def judge(rerun: bool):
        return run_gate(cycle.store, model, "prod", inputs=inputs, parallel=False, rerun=rerun,
                        on_result=lambda r: cycle.progress.note(f"{r.policy}: {'pass' if r.passed else 'FAIL'}"))

    result = judge(False)
    if _only_latency_failed(result):
        # The contract's p99 is measured on this machine: a burst of load from other processes can
        # push a 1 ms model past its bound. Measured once more, on the record (both runs are kept).
        cycle.progress.note("the contract's latency check failed under load: measuring it again")
        result = judge(True)
    cycle.gates[model] = result
    cycle.progress.value("gates", f"{'passed' if result.passed else 'FAILED'} "
                                  f"({sum(o.passed for o in result.outcomes)}/{len(result.outcomes)}), "
                                  f"{len(result.outcomes)} attestations logged")
    if required and not result.passed:
        from factory.errors import AdmissionDeniedError

        failures = "; ".join(f"{o.policy}: {o.result.reason}" for o in result.failed)
        raise AdmissionDeniedError(f"{model} failed its prod gates ({failures}); see 'factory tickets --home "
                                   f"{cycle.store.home}'", model, "prod",
                                   tuple(o.predicate_type for o in result.failed))
    return result


# -- serving -----------------------------------------------------------------------------------
def deploy_prod(cycle: Cycle, model: str):
    """Serve ``model`` as the model's prod version (admission checks its attestations first)."""
    from factory.serve import deploy

    done = deploy(cycle.store, model, "prod", name=MODEL, timeout_s=300)
    cycle.endpoint = {"url": done.url, "curl": done.curl, "version": done.version}
    cycle.progress.value("serving", f"{done.url} (version {done.version})")
    return done


def holdout_rows(cycle: Cycle, evaluation: str) -> tuple[np.ndarray, np.ndarray]:
    table = cycle.store.datasets.read(evaluation)
    rows = np.stack([table[name].to_numpy(zero_copy_only=False) for name in FEATURES], axis=1)
    return rows.astype(np.float32), table[LABEL].to_numpy()


def describe_event(details: dict[str, Any]) -> str:
    event = details.get("event", "?")
    parts = [event]
    for key in ("stage", "weight", "reason"):
        if details.get(key) not in (None, ""):
            parts.append(f"{key} {details[key]}")
    return " ".join(str(p) for p in parts)

