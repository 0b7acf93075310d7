"""The package and gates steps on real packages and a real gate set, run by the controller in-process:
a candidate registered, a signed gate run as the step's output, a failing gate failing the step once."""

from __future__ import annotations

from gates_kit import add_dataset, biased_package, credit_table, fair_package, gated_store

from factory.runtime import Controller, Pipeline, resolve, wait_pipeline


def _run(store, pipeline):
    ctl = Controller(store, loop_s=0.05)
    ctl.start()
    try:
        run_id = ctl.submit(resolve(store, pipeline.spec()), "r")
        return wait_pipeline(store, run_id, timeout_s=300, poll_s=0.05)
    finally:
        ctl.stop()


def _gated(candidate: str, gate_config: dict, dataset: str | None = None) -> Pipeline:
    p = Pipeline("gated")
    pkg = p.step("pkg", "package", inputs={"model": candidate})
    inputs = {"model": pkg.output("model")}
    if dataset:
        inputs["dataset"] = dataset
    p.step("gate", "gates", inputs=inputs, config=gate_config, retries=2, retry_delay_s=0.01)
    return p


def test_package_then_dev_gates_register_a_candidate_and_record_the_gate_run(tmp_path):
    """A package step registers the candidate ref; the gates step's output is its passed gate run."""
    store = gated_store(tmp_path)
    digest = fair_package(store).digest
    status = _run(store, _gated(digest, {"set": "dev"}))
    assert status.succeeded, status.error
    assert store.refs.get(f"model/credit/candidates/{digest.removeprefix('sha256:')[:12]}") == digest
    assert store.artifacts.get(status.outputs("gate")["gate"]).kind == "run"
    assert digest in store.runs.get(status.step("gate").run).parents


def test_a_failing_gate_fails_the_step_without_retrying(tmp_path):
    """A candidate below the quality bar fails its gate step once (no retry fixes a verdict) and says why."""
    store = gated_store(tmp_path)
    data = add_dataset(store, "credit", credit_table(300))
    digest = biased_package(store).digest
    config = {"set": "staging", "label": "label", "features": ["x", "group"],
              "thresholds": {"accuracy": {"min": 0.99}}}
    status = _run(store, _gated(digest, config, dataset=data))
    assert status.state == "failed" and status.failed_step == "gate"
    assert "GateFailedError" in status.error and "quality" in status.error
    assert status.step("gate").attempt == 1
