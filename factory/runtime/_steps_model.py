"""The model steps: ``train`` and ``tune`` (Ray Train / Tune on the input dataset, packaged as a
candidate), ``evaluate`` (the input model's metrics on a dataset, recorded), ``gates`` (a built-in gate set on the input model) and ``package`` (a model taken as
built, or built by a function, validated against its contract and registered as a candidate)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from factory.errors import GateFailedError
from factory.runtime._task import import_function

if TYPE_CHECKING:
    from factory.runtime._task import StepContext
    from factory.train import TrainResult

__all__ = ["train", "tune", "evaluate", "gates", "package"]


def _outputs(ctx: StepContext, result: TrainResult) -> dict[str, str]:
    ctx.log_metrics(result.metrics)
    ctx.details.update(candidate=result.candidate, reused=result.reused, training_run=result.run)
    return {"model": result.model, "config": result.config, "code": result.code, "environment": result.environment}


def train(ctx: StepContext) -> dict[str, str]:
    """Train on the input ``dataset`` with the step's training config."""
    from factory.train import train as train_model

    config = {**ctx.config, "dataset": ctx.inputs["dataset"]}
    return _outputs(ctx, train_model(config, store=ctx.store))


def tune(ctx: StepContext) -> dict[str, str]:
    """Sweep on the input ``dataset``; the best trial is packaged."""
    from factory.train import SweepConfig
    from factory.train import tune as tune_models

    config = dict(ctx.config)
    config["train"] = {**(config.get("train") or {}), "dataset": ctx.inputs["dataset"]}
    result = tune_models(SweepConfig.model_validate(config), store=ctx.store)
    ctx.details.update(best_trial=result.best_trial, params=result.params, trials=len(result.trials))
    return _outputs(ctx, result.best)


def evaluate(ctx: StepContext) -> dict[str, str]:
    """The input ``model``'s metrics on the input ``dataset``: an ``evaluation`` artifact whose parents are both."""
    from factory.gates import measure_quality

    config = ctx.config
    model = ctx.store.artifacts.resolve(ctx.inputs["model"])
    measured = measure_quality(ctx.store, model, ctx.inputs["dataset"], label=config["label"],
                               features=config.get("features"), output=config.get("output"))
    metadata = {"model": model, "label": config["label"], **measured}
    evaluation = ctx.store.artifacts.add("evaluation", metadata=metadata, parents=[model, measured["dataset"]],
                                         name=config.get("name") or f"evaluation of {model[:19]}")
    ctx.log_metrics(measured["metrics"])
    ctx.details.update(metrics=measured["metrics"], rows=measured["rows"])
    return {"evaluation": evaluation.digest}


def gates(ctx: StepContext) -> dict[str, str]:
    """Run the gate set on the input ``model``; a failing policy fails the step (no retry fixes it)."""
    from factory.gates import GateInputs, run_gate

    config = ctx.config
    inputs = GateInputs(dataset=ctx.inputs.get("dataset"), label=config.get("label"), features=config.get("features"),
                        output=config.get("output"), thresholds=config.get("thresholds"),
                        sensitive=config.get("sensitive"), reference=ctx.inputs.get("reference"),
                        current=ctx.inputs.get("current"))
    gate = run_gate(ctx.store, ctx.inputs["model"], config.get("set", "prod"), inputs=inputs, parallel=False)
    ctx.details.update(gate_run=gate.run.id, passed=gate.passed, reused=gate.reused,
                       results={o.policy: str(o.result.verdict) for o in gate.outcomes})
    if not gate.passed:
        failed = tuple(o.policy for o in gate.failed)
        raise GateFailedError(f"gate set {gate.set_name!r} failed on {gate.subject} ({', '.join(failed)}): see "
                              f"'factory gates show {gate.run.id}' and its tickets", gate.subject, failed)
    return {"gate": gate.run.digest}


def package(ctx: StepContext) -> dict[str, str]:
    """A model package: the input ``model`` checked, or what ``builder`` returns packaged; a candidate."""
    from factory.contract import open_package, package as package_model

    store = ctx.store
    config = ctx.config
    if config.get("builder"):
        built: Any = import_function(config["builder"], f"step {ctx.step!r} builder")(**config.get("args", {}))
        module, contract = built
        digest = package_model(store, module, contract, parents=list(ctx.inputs.values())).digest
    else:
        digest = store.artifacts.resolve(ctx.inputs["model"])
    view = open_package(store, digest)  # refuses a package that breaks its contract
    candidate = f"model/{view.contract.name}/candidates/{digest.removeprefix('sha256:')[:12]}"
    if store.refs.get(candidate) != digest:
        store.refs.set(candidate, digest, reason=f"packaged by pipeline run {ctx.pipeline_run}")
    ctx.details.update(candidate=candidate)
    return {"model": digest}
