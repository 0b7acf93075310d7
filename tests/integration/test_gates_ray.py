"""Gate runs on a Ray cluster: the policies run as parallel Ray tasks, with the same findings as in process."""

from __future__ import annotations

from factory.gates import run_gate

from gates_kit import add_dataset, biased_package, credit_table, gated_store, quality_config, quick_set


def test_a_gate_run_on_a_connected_cluster_evaluates_policies_as_ray_tasks(ray_cluster, tmp_path):
    """Connected to Ray, a gate run farms its policies out as tasks; verdicts and evidence match the local run."""
    store = gated_store(tmp_path)
    add_dataset(store, "credit", credit_table(200))
    digest = biased_package(store).digest
    policies = quick_set("security", "model-card", "quality", quality=quality_config(0.9))
    on_ray = run_gate(store, digest, policies)
    events = on_ray.run.events()
    assert events[-1].details["executor"] == "ray"
    local = run_gate(store, digest, policies, parallel=False, rerun=True)
    assert local.run.events()[-1].details["executor"] == "process"
    assert [(o.policy, o.result.verdict, o.result.reason, dict(o.result.figures)) for o in on_ray.outcomes] == \
        [(o.policy, o.result.verdict, o.result.reason, dict(o.result.figures)) for o in local.outcomes]
    quality = on_ray.outcomes[2]
    assert not quality.passed and quality.ticket and store.artifacts.get(quality.result.evidence["metrics"]).kind \
        == "evidence"
    assert [o.index for o in on_ray.outcomes] == [0, 1, 2]  # signed and logged by the driver, in one batch
