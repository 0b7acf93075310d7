"""Experiment namespaces: what ``factory experiment start NAME`` gives a data scientist.

- an isolated Ray namespace (``experiment-NAME``) and a ``runtime_env`` with pinned
  dependencies (``connect()`` joins the cluster with both);
- deterministic samples of dataset versions, each itself a dataset version with the version
  sampled as its parent (``datasets``: source name -> sample digest);
- tracking: ``track(name)`` is ``factory.track`` on the experiment's store, the run tagged with
  the experiment;
- an identity: the store it hands out acts as ``experiment:NAME``. The default protected refs
  (``model/*/staging``, ``model/*/prod``: only ``factory-controller``) refuse its moves, and the
  controller refuses rollout steps it submits; what it packages is a candidate for the gates.

The experiment is a store run of kind ``experiment`` (key: its name and settings), its samples
recorded as outputs: starting it again with the same settings gives the same experiment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from factory.errors import InvalidInputError
from factory.runtime._promotion import EXPERIMENT_PREFIX
from factory.runtime._sample import sample_dataset
from factory.runtime._spec import RuntimeEnv
from factory.runtime._step_types import explain

if TYPE_CHECKING:
    from factory.store import Run, Store
    from factory.train import Tracker

__all__ = ["Experiment", "start_experiment", "get_experiment", "list_experiments", "EXPERIMENT_KIND"]

EXPERIMENT_KIND = "experiment"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"{name!r} is not an experiment name: use lowercase letters, digits and '-', "
                                "starting with a letter (e.g. churn-lr)")
    return name


@dataclass(frozen=True)
class Experiment:
    """A started experiment: its namespace, environment, actor, sampled datasets and run."""

    name: str
    namespace: str
    actor: str
    runtime_env: dict[str, Any]
    datasets: Mapping[str, str]
    run_id: str
    home: str

    def store(self, base: Store) -> Store:
        """``base``'s store, acting as this experiment (refs it moves are recorded as its moves)."""
        from factory.store import Store

        return Store(base.home, settings=dataclasses.replace(base.settings, actor=self.actor))

    def connect(self, address: str | None = None, **kwargs: Any) -> Any:
        """Join the Ray cluster in the experiment's namespace with its runtime_env."""
        import ray

        return ray.init(address=address, namespace=self.namespace, runtime_env=self.runtime_env or None, **kwargs)

    def track(self, base: Store, name: str, *, params: Mapping[str, Any] | None = None,
              inputs: Iterable[str] = ()) -> Tracker:
        """``factory.track(name)`` for this experiment: its store and actor, its samples among the inputs."""
        from factory.train import track

        return track(name, store=self.store(base), params={"experiment": self.name, **dict(params or {})},
                     inputs=[*self.datasets.values(), *inputs])


def _experiment(run: Run) -> Experiment:
    config = run.config
    return Experiment(name=config["name"], namespace=config["namespace"], actor=config["actor"],
                      runtime_env=dict(config.get("runtime_env") or {}), datasets=run.outputs(), run_id=run.id,
                      home=config.get("home", ""))


def start_experiment(store: Store, name: str, *, datasets: Sequence[str] = (), fraction: float | None = None,
                     rows: int | None = None, seed: int = 0, pip: Sequence[str] = (),
                     env_vars: Mapping[str, str] | None = None) -> Experiment:
    """Start (or find, with the same settings) the experiment ``name``: sample each of ``datasets``
    (``NAME`` or ``NAME@V``) by ``fraction`` or ``rows`` with ``seed``; pin ``pip`` (``pkg==ver``)."""
    _check_name(name)
    try:
        env = RuntimeEnv.model_validate({"pip": tuple(pip), "env_vars": dict(env_vars or {})})
    except ValidationError as exc:
        raise InvalidInputError(f"experiment {name!r}: {explain(exc, 'runtime_env')}") from None
    sources = {}
    for ref in datasets:
        version = store.datasets.get(ref)
        sources[version.name] = version.digest
    if sources and fraction is None and rows is None:
        raise InvalidInputError("give the sample size as --fraction or --rows")
    actor = EXPERIMENT_PREFIX + name
    config = {"name": name, "namespace": f"experiment-{name}", "actor": actor, "runtime_env": env.to_ray(),
              "sources": sources, "fraction": fraction, "rows": rows, "seed": seed, "home": store.home}
    from factory.store import canonical_json

    key = f"experiment:{name}:{hashlib.sha256(canonical_json(config)).hexdigest()[:16]}"
    run = store.runs.start(EXPERIMENT_KIND, config=config, parents=list(sources.values()), key=key, name=name)
    if not run.reused:
        for source, digest in sources.items():
            sample = sample_dataset(store, digest, name=f"{name}-{source}", fraction=fraction, rows=rows, seed=seed)
            run.output(source, sample.digest)
        run.finish("succeeded", samples=run.outputs())
    return _experiment(run)


def get_experiment(store: Store, name: str) -> Experiment:
    """The latest start of the experiment ``name``."""
    from factory.errors import NotFoundError

    found = [r for r in store.runs.list(kind=EXPERIMENT_KIND, state="succeeded") if r.name == _check_name(name)]
    if not found:
        raise NotFoundError(f"no experiment {name!r}: start it with 'factory experiment start {name}'")
    return _experiment(found[-1])


def list_experiments(store: Store) -> list[Experiment]:
    """Every experiment's latest start, by name."""
    latest: dict[str, Run] = {}
    for run in store.runs.list(kind=EXPERIMENT_KIND, state="succeeded"):
        latest[run.name or ""] = run
    return [_experiment(r) for _, r in sorted(latest.items())]
