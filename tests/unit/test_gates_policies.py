"""The built-in policies on real packages and real dataset versions: fairlearn, scipy, modelscan, validate."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from factory.contract._files import manifest_bytes
from factory.errors import InvalidInputError
from factory.gates import PolicyContext, PolicyResult, Verdict, default_policies, evaluate
from factory.gates.policies import (
    ContractPolicy,
    DriftPolicy,
    FairnessPolicy,
    ModelCardPolicy,
    QualityPolicy,
    SecurityPolicy,
)

from gates_kit import add_dataset, biased_package, credit_table, fair_package

FEATURES = ("x", "group")


def run(policy, store, digest) -> PolicyResult:
    return evaluate(store, digest, [policy], context=PolicyContext(store))[0]


def fairness(**overrides) -> FairnessPolicy:
    return FairnessPolicy(**{"dataset": "credit", "label": "label", "sensitive": "group", "features": FEATURES,
                             **overrides})


def test_builtins_are_found_through_the_entry_point_group():
    """The six built-ins load from factory.policies exactly as a team's plugin would."""
    registry = default_policies()
    assert {"contract", "quality", "fairness", "security", "drift", "model-card"} <= set(registry.ids())
    assert isinstance(registry.create("model-card"), ModelCardPolicy)
    with pytest.raises(InvalidInputError, match="min_ratio"):
        registry.create("fairness", dataset="d", label="l", sensitive="s", min_ratio=2)


def test_a_model_deciding_on_the_sensitive_column_fails_fairness_and_a_fair_one_passes(store):
    """Predictions driven by the group fail the four-fifths rule; predictions on the score alone pass."""
    add_dataset(store, "credit", credit_table(400))
    biased = run(fairness(), store, biased_package(store).digest)
    assert biased.verdict is Verdict.FAIL
    assert "demographic parity ratio 0.000 < 0.8" in biased.reason
    assert biased.figures["selection_rate.0"] == 0.0 and biased.figures["selection_rate.1"] == 1.0
    fair = run(fairness(), store, fair_package(store).digest)
    assert fair.verdict is Verdict.PASS, fair.reason
    assert fair.figures["demographic_parity_ratio"] >= 0.8
    assert fair.figures["equalized_odds_difference"] == 0.0
    assert fair.evidence["dataset"] == store.datasets.get("credit").digest


def test_fairness_fails_with_a_reason_for_one_group_or_an_empty_one(store):
    """One group only, a declared group with no rows, or a tiny group: FAIL, saying which."""
    add_dataset(store, "credit", credit_table(200, groups=(0,)))
    digest = fair_package(store).digest
    one = run(fairness(), store, digest)
    assert one.verdict is Verdict.FAIL and "1 group(s)" in one.reason
    empty = run(fairness(groups=(0, 1)), store, digest)
    assert "group 1 has no rows" in empty.reason.replace("'", "")
    add_dataset(store, "small", credit_table(40))
    small = run(fairness(dataset="small"), store, digest)
    assert small.verdict is Verdict.FAIL and "below the minimum of 30" in small.reason


def test_quality_is_computed_on_the_dataset_not_read_from_the_package(store):
    """A package claiming accuracy 0.99 is judged on its real predictions; the claim is shown beside them."""
    add_dataset(store, "credit", credit_table(300))
    policy = QualityPolicy(dataset="credit", label="label", features=FEATURES,
                           thresholds={"accuracy": {"min": 0.9}})
    good = run(policy, store, fair_package(store).digest)
    assert good.verdict is Verdict.PASS and good.figures["accuracy"] == 1.0
    liar = run(policy, store, biased_package(store, metrics={"accuracy": 0.99}).digest)
    assert liar.verdict is Verdict.FAIL and "accuracy" in liar.reason
    assert liar.figures["claimed.accuracy"] == 0.99 and liar.figures["accuracy"] < 0.7
    with pytest.raises(ValueError, match="unknown metric"):
        QualityPolicy(dataset="credit", label="label", thresholds={"acc": {"min": 1}})


def test_drift_fails_a_shifted_feature_and_passes_an_unshifted_one(store):
    """A mean shift of one standard deviation in x fails; a fresh sample of the same distribution passes."""
    add_dataset(store, "reference", credit_table(2000, seed=1))
    add_dataset(store, "same", credit_table(2000, seed=2))
    add_dataset(store, "shifted", credit_table(2000, seed=3, shift=1.0))
    digest = fair_package(store).digest
    calm = run(DriftPolicy(reference="reference", current="same", features=("x", "income")), store, digest)
    assert calm.verdict is Verdict.PASS, calm.reason
    moved = run(DriftPolicy(reference="reference", current="shifted", features=("x", "income")), store, digest)
    assert moved.verdict is Verdict.FAIL
    assert moved.reason.startswith("x: PSI") and "income" not in moved.reason
    assert moved.figures["ks_alpha_corrected"] == 0.025


def test_security_fails_a_folder_with_a_pickle_without_ever_running_it(store, tmp_path):
    """Pickles in an imported folder are found (a disguised one by its bytes); their payloads never run."""
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "imported"
    folder.mkdir()
    (folder / "weights.data").write_bytes(pickle.dumps(Payload(), protocol=4))  # modelscan skips this suffix
    (folder / "model.pkl").write_bytes(pickle.dumps(Payload(), protocol=2))
    (folder / "config.json").write_text("{}")
    digest = fair_package(store).digest
    result = run(SecurityPolicy(directory=str(folder)), store, digest)
    assert result.verdict is Verdict.FAIL
    assert "weights.data" in result.reason and "pickle" in result.reason
    assert "model.pkl has a suffix" in result.reason
    assert "modelscan: CRITICAL Use of unsafe operator 'system'" in result.reason
    assert not marker.exists()
    clean = run(SecurityPolicy(), store, digest)
    assert clean.verdict is Verdict.PASS and clean.figures["tensors"] == 4


def test_security_passes_a_sharded_package_reading_only_its_headers(store):
    """Weights written as shards pass the security policy, every shard's header counted."""
    digest = fair_package(store, max_shard_bytes=16).digest
    result = run(SecurityPolicy(), store, digest)
    assert result.verdict is Verdict.PASS, result.reason
    assert result.figures["weight_files"] >= 2 and result.figures["tensors"] == 4


def test_a_package_the_store_refuses_fails_every_policy_with_that_reason(store):
    """A stored model whose manifest names a pickle fails security (and every other gate) saying why."""
    pkg = fair_package(store)
    files = dict(json.loads(store.blobs.get(pkg.digest))["files"])
    files["model.pt"] = files.pop("model.safetensors")
    digest = store.blobs.put_bytes(manifest_bytes(files))
    store.artifacts.add("model", digest=digest, name="evil")
    results = evaluate(store, digest, [SecurityPolicy(), ModelCardPolicy()])
    assert [r.verdict for r in results] == [Verdict.FAIL, Verdict.FAIL]
    assert "model.pt" in results[0].reason and "can run code" in results[0].reason


def test_model_card_needs_its_sections_and_metrics(store):
    """A card missing a required section or metric fails naming it; the packaged card passes the defaults."""
    digest = fair_package(store, metrics={"accuracy": 0.9}).digest
    assert run(ModelCardPolicy(), store, digest).verdict is Verdict.PASS
    strict = run(ModelCardPolicy(required_sections=("Inputs", "Limitations"),
                                 required_metrics=("accuracy", "auc")), store, digest)
    assert strict.verdict is Verdict.FAIL
    assert "no '## Limitations' section" in strict.reason and "'auc' is not in the card" in strict.reason


def test_contract_policy_runs_the_validation_harness(store):
    """A package that meets its contract passes, with the harness result kept as evidence."""
    digest = fair_package(store).digest
    result = run(ContractPolicy(runs=3, budget_s=0.2), store, digest)
    assert result.verdict is Verdict.PASS, result.reason
    assert json.loads(store.blobs.get(result.evidence["validation"]))["ok"] is True


def test_a_plugin_that_raises_fails_instead_of_passing(store):
    """A broken policy can never let a package through: its exception becomes a FAIL naming it."""

    class Broken:
        id, version = "broken", "0.1"

        def evaluate(self, package, context):
            raise ZeroDivisionError("oops")

    [result] = evaluate(store, fair_package(store).digest, [Broken()])
    assert result.verdict is Verdict.FAIL and "ZeroDivisionError: oops" in result.reason
