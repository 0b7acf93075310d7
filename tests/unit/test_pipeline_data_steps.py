"""The ``features`` and ``evaluate`` step types: configs checked at load, and both run by the controller
in-process on a real store (a point-in-time training set with a holdout, then a model's recorded metrics)."""

from __future__ import annotations

import pipeline_kit
import pytest
from gates_kit import fair_package, gated_store

from factory.errors import InvalidInputError
from factory.runtime import Controller, load_pipeline, resolve, wait_pipeline


def _yaml(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\n" + text)
    return load_pipeline(path)


ROWS = "dataset: 'dataset:apps', scores: 'ref:feature-view/scores'"


@pytest.mark.parametrize(("body", "says"), [
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {}}]", "config.dataset: is required"),
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {dataset: t, holdout: 1.5}}]",
     "config.holdout: Input should be less than 1"),
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {dataset: t, holdout_dataset: h}}]",
     "holdout (the share of rows, e.g. 0.2) is unset"),
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {dataset: t, transform_args: {a: 1}}}]",
     "no transform"),
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {dataset: t, transform: nocolon}}]",
     "config.transform"),
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {dataset: t, join: left}}]",
     "config.join: is not a known setting"),
    ("steps: [{name: f, type: features, inputs: {dataset: 'dataset:apps'}, config: {dataset: t}}]",
     "at least one feature view"),
    ("steps: [{name: f, type: features, inputs: {scores: 'ref:feature-view/scores'}, config: {dataset: t}}]",
     "reads input 'dataset'"),
    ("steps: [{name: e, type: evaluate, inputs: {model: 'ref:m', dataset: 'dataset:d'}, config: {}}]",
     "config.label: is required"),
    ("steps: [{name: e, type: evaluate, inputs: {model: 'ref:m'}, config: {label: y}}]",
     "an evaluate step needs input(s) dataset"),
    ("steps: [{name: e, type: evaluate, inputs: {model: 'ref:m', dataset: 'dataset:d', extra: 'ref:x'}, "
     "config: {label: y}}]", "takes no input 'extra'"),
    ("steps: [{name: e, type: evaluate, inputs: {model: 'ref:m', dataset: 'dataset:d'}, "
     "config: {label: y, features: []}}]", "config.features"),
    ("steps: [{name: f, type: features, inputs: {" + ROWS + "}, config: {dataset: t}}, "
     "{name: e, type: evaluate, inputs: {model: 'ref:m', dataset: f.holdout}, config: {label: y}}]",
     "has no output 'holdout'"),
])
def test_bad_features_and_evaluate_configs_are_refused_at_load(tmp_path, body, says):
    """A mistake in a features or evaluate step is refused when the pipeline loads, naming the field."""
    with pytest.raises(InvalidInputError) as caught:
        _yaml(tmp_path, body)
    assert says in str(caught.value)


def test_features_and_evaluate_steps_round_trip_through_yaml(tmp_path):
    """Both step types written in Python load back from their YAML to the same spec."""
    p = pipeline_kit.point_in_time_pipeline("sha256:" + "1" * 64)
    path = tmp_path / "pit.yaml"
    path.write_text(p.to_yaml())
    assert load_pipeline(path) == p.spec()


def test_features_then_evaluate_record_a_point_in_time_set_its_holdout_and_the_models_metrics(tmp_path):
    """The holdout is the most recent half with the values as of each row's time; the evaluation's metrics say so."""
    store = gated_store(tmp_path)
    pipeline_kit.point_in_time_book(store)
    model = fair_package(store).digest
    ctl = Controller(store, loop_s=0.05)
    ctl.start()
    try:
        plan = resolve(store, pipeline_kit.point_in_time_pipeline(model).spec())
        status = wait_pipeline(store, ctl.submit(plan, "r"), timeout_s=300,
                               poll_s=0.05)
    finally:
        ctl.stop()
    assert status.succeeded, status.error
    made = status.outputs("features")
    train, holdout = store.datasets.read(made["dataset"]), store.datasets.read(made["holdout"])
    assert (train.num_rows, holdout.num_rows) == (40, 40)
    assert min(holdout["ts"].to_pylist()) > max(train["ts"].to_pylist())  # the holdout is the later half
    evaluation = store.artifacts.get(status.outputs("evaluate")["evaluation"])
    assert evaluation.kind == "evaluation" and set(evaluation.parents) == {model, made["holdout"]}
    assert evaluation.metadata["metrics"]["accuracy"] == 1.0 and evaluation.metadata["rows"] == 40
    logged = {m.name: m.value for m in store.runs.get(status.step("evaluate").run).metrics()}
    assert logged["accuracy"] == 1.0
