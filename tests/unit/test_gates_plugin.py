"""A team's own policy, installed as a distribution, is found through the entry-point group and runs."""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from factory.gates import PolicyRegistry, Verdict, evaluate, open_attestation
from factory.gates.evaluation import sign_results

from gates_kit import fair_package, keyring

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy_plugin"


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """The example plugin made importable and discoverable as pip would, without pip: a dist-info on sys.path."""
    site = tmp_path / "site"
    dist = site / "factory_example_policy-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: factory-example-policy\nVersion: 0.1.0\n")
    entry = next(line for line in (EXAMPLE / "pyproject.toml").read_text().splitlines()
                 if line.startswith("max-parameters")).replace('"', "")
    (dist / "entry_points.txt").write_text(f"[factory.policies]\n{entry}\n")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("factory_example_policy", None)


def test_the_example_plugin_is_discovered_and_judges_a_real_package(installed_example, store, tmp_path):
    """Declared only in its own pyproject, the policy loads by id, evaluates, and its result signs and verifies."""
    registry = PolicyRegistry.discover()
    assert "max-parameters" in registry.ids() and "fairness" in registry.ids()
    digest = fair_package(store).digest
    small = registry.create("max-parameters", limit=5)
    large = registry.create("max-parameters", limit=1000)
    too_big, fits = evaluate(store, digest, [small]) + evaluate(store, digest, [large])
    assert too_big.verdict is Verdict.FAIL and too_big.figures["parameters"] == 12
    assert fits.verdict is Verdict.PASS
    keys = keyring(tmp_path)
    [env] = sign_results([fits], [large], subject_name="credit", subject_digest=digest, signer=keys.signer(),
                         at=datetime.now(UTC), actor="tester")
    att = open_attestation(env.to_json(), keys.trusted())
    assert att.predicate_type == "https://example.com/attestations/max-parameters/v1"
    assert att.predicate["config"] == {"limit": 1000} and att.subject_digest == digest


def test_a_policy_id_that_is_not_installed_says_how_to_get_it():
    """Asking for an unknown policy names the installed ones and the entry-point group to declare it in."""
    with pytest.raises(KeyError, match="factory.policies"):
        PolicyRegistry.discover().create("no-such-policy")
