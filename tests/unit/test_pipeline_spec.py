"""Pipelines as users write them (Python or YAML): checked whole before anything runs, errors naming
the step and field, and the step key that decides reuse."""

from __future__ import annotations

import pytest

from factory.errors import InvalidInputError
from factory.runtime import Pipeline, load_pipeline, parse_pipeline, resolve
from factory.runtime._plan import step_key


def _yaml(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_python_pipeline_round_trips_through_yaml(tmp_path):
    """A pipeline written in Python and saved as YAML loads back to the same spec."""
    p = Pipeline("credit", runtime_env={"pip": ["scikit-learn==1.5.2"]})
    raw = p.step("raw", "ingest", inputs={"source": tmp_path / "credit.csv"}, config={"dataset": "credit"})
    p.user("clean", "pipeline_kit:join", inputs={"raw": raw.output("dataset")}, retries=2,
           resources={"cpus": 0.5, "memory_mb": 512})
    loaded = load_pipeline(_yaml(tmp_path, p.to_yaml()))
    assert loaded == p.spec()
    assert loaded.step("clean").retries == 2 and loaded.step("clean").resources.cpus == 0.5


@pytest.mark.parametrize(("body", "says"), [
    ("steps: [{name: a, type: user, function: m:f, inputs: {x: b.out}}]", "there is no step 'b'"),
    ("steps: [{name: a, type: nope}]", "'nope' is not a step type"),
    ("steps: [{name: a, type: user}]", "user step names its function"),
    ("steps: [{name: a, type: user, function: m:f, retries: -1}]", "step 'a': retries"),
    ("steps: [{name: a, type: user, function: m:f, colour: red}]", "step 'a': colour: is not a known field"),
    ("runtime_env: {pip: [numpy]}\nsteps: [{name: a, type: user, function: m:f}]", "is not pinned"),
    ("steps: [{name: a, type: user, function: m:f, inputs: {x: b.o}}, "
     "{name: b, type: user, function: m:f, inputs: {y: a.o}}]", "cycle"),
    ("steps: [{name: a, type: sample, inputs: {dataset: 'dataset:x'}, config: {}}]", "fraction or rows"),
    ("steps: [{name: s, type: sample, config: {rows: 5}}]", "a sample step needs input(s) dataset"),
    ("steps: [{name: a, type: user, function: m:f}, {name: a, type: user, function: m:g}]", "defined twice"),
])
def test_bad_pipelines_are_refused_naming_step_and_field(tmp_path, body, says):
    """Each mistake is refused when the file is loaded, with a message that points at it."""
    with pytest.raises(InvalidInputError) as caught:
        load_pipeline(_yaml(tmp_path, "name: p\n" + body))
    assert says in str(caught.value)


def test_missing_file_and_non_mapping_are_refused(tmp_path):
    """A wrong path or a YAML list says what to give instead."""
    with pytest.raises(InvalidInputError, match="no pipeline file"):
        load_pipeline(tmp_path / "missing.yaml")
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        parse_pipeline(["a"])


def test_resolve_turns_names_into_digests_and_refuses_unknown_ones(store, tmp_path):
    """Refs, files and digests become digests at submission; an unknown ref names the step and input."""
    blob = store.put_blob(b"data").digest
    store.refs.set("inputs/data", blob)
    source = tmp_path / "rows.csv"
    source.write_text("a,b\n1,2\n")
    p = Pipeline("resolved")
    p.user("u", "pipeline_kit:join", inputs={"r": "ref:inputs/data", "d": blob[:20], "f": source})
    plan = resolve(store, p.spec())
    inputs = plan.step("u").inputs
    assert inputs["r"] == blob and inputs["d"] == blob and inputs["f"].startswith("sha256:")
    bad = Pipeline("bad")
    bad.user("u", "pipeline_kit:join", inputs={"r": "ref:inputs/none"})
    with pytest.raises(Exception, match="step 'u' input 'r'"):
        resolve(store, bad.spec())


def test_step_key_changes_with_what_a_step_computes_not_how_it_runs(store):
    """Retries and resources do not change a step's key; its config, inputs and code do."""
    def key(**step):
        p = Pipeline("k")
        p.user("u", "pipeline_kit:join", **step)
        planned = resolve(store, p.spec()).step("u")
        return step_key(planned, planned.inputs)

    base = key(config={"calls": None})
    assert key(config={"calls": None}, retries=3, resources={"cpus": 2}) == base
    assert key(config={"calls": "x"}) != base
    assert key(config={"calls": None}, inputs={"y": store.put_blob(b"y").digest}) != base
    assert key(config={"calls": None}, runtime_env={"env_vars": {"A": "1"}}) != base
