"""Admission per environment: every required attestation present, passing, trusted and fresh; else deny."""

from __future__ import annotations

from datetime import timedelta

from factory.gates import KeyRing, PolicyResult, attest, open_attestation
from factory.gates.admission import DEFAULT_ENVIRONMENTS, EnvironmentPolicy, decide
from factory.gates.attestations import attest_override

from gates_kit import SUBJECT, T0

CONTRACT = "https://factory.dev/contract-validation/v1"
SECURITY = "https://factory.dev/attestations/policy/security/v1"


def signed(keys, predicate_type, verdict="pass", *, at=T0, subject=SUBJECT, **predicate):
    result = PolicyResult(predicate_type.rsplit("/", 2)[-2], "1.0", verdict, "because")
    env = attest(result, subject_name="credit", subject_digest=subject, predicate_type=predicate_type,
                 signer=keys.signer(), at=at, actor="tester", config=predicate)
    return open_attestation(env.to_json(), keys.trusted())


def all_prod(keys, *, at=T0, skip=()):
    return [signed(keys, t, at=at) for t in DEFAULT_ENVIRONMENTS["prod"].requires if t not in skip]


def test_missing_one_prod_attestation_admits_to_dev_and_is_refused_by_prod_naming_it(tmp_path):
    """A candidate without its fairness attestation runs in dev; prod says exactly which type is missing."""
    keys = KeyRing(tmp_path / "k")
    fairness = "https://factory.dev/attestations/policy/fairness/v1"
    atts = all_prod(keys, skip=(fairness,))
    now = T0 + timedelta(hours=1)
    assert decide(DEFAULT_ENVIRONMENTS["dev"], SUBJECT, atts, now=now).allowed
    prod = decide(DEFAULT_ENVIRONMENTS["prod"], SUBJECT, atts, now=now)
    assert not prod.allowed
    assert [(r.predicate_type, r.reason) for r in prod.missing] == [(fairness, "no attestation")]
    assert fairness in prod.explain()


def test_an_attestation_older_than_the_window_does_not_count(tmp_path):
    """Past the environment's freshness window a passing attestation is treated as missing, with its age."""
    keys = KeyRing(tmp_path / "k")
    atts = all_prod(keys)
    prod = DEFAULT_ENVIRONMENTS["prod"]
    assert decide(prod, SUBJECT, atts, now=T0 + timedelta(days=6)).allowed
    late = decide(prod, SUBJECT, atts, now=T0 + timedelta(days=8))
    assert not late.allowed and "older than prod's limit of 7 days" in late.missing[0].reason


def test_the_newest_result_counts_and_a_later_override_meets_it(tmp_path):
    """A FAIL after a PASS refuses; a signed override made after the FAIL admits and is named."""
    keys = KeyRing(tmp_path / "k")
    env = EnvironmentPolicy(name="edge", requires=(CONTRACT, SECURITY))
    atts = [signed(keys, CONTRACT), signed(keys, SECURITY, at=T0),
            signed(keys, SECURITY, "fail", at=T0 + timedelta(minutes=5))]
    now = T0 + timedelta(hours=1)
    refused = decide(env, SUBJECT, atts, now=now)
    assert [r.predicate_type for r in refused.missing] == [SECURITY]
    assert "latest result is fail" in refused.missing[0].reason
    override = attest_override(subject_name="credit", subject_digest=SUBJECT, overrides=SECURITY,
                               reason="accepted risk", signer=keys.signer(), at=T0 + timedelta(minutes=10),
                               actor="alice")
    admitted = decide(env, SUBJECT, [*atts, open_attestation(override.to_json(), keys.trusted())], now=now)
    assert admitted.allowed and admitted.requirements[1].overridden
    assert "overridden by alice: accepted risk" in admitted.requirements[1].reason


def test_default_is_deny_and_keys_must_be_the_environments(tmp_path):
    """No attestations, attestations about another package, or by a key prod does not trust: refused."""
    keys, other = KeyRing(tmp_path / "k"), KeyRing(tmp_path / "other")
    env = EnvironmentPolicy(name="prod", requires=(CONTRACT,), trusted_keys=(keys.signer().keyid,))
    now = T0 + timedelta(hours=1)
    assert not decide(env, SUBJECT, [], now=now).allowed
    assert not decide(env, SUBJECT, [signed(keys, CONTRACT, subject="sha256:" + "00" * 32)], now=now).allowed
    foreign = decide(env, SUBJECT, [signed(other, CONTRACT)], now=now)
    assert "does not trust" in foreign.missing[0].reason
    assert decide(env, SUBJECT, [signed(keys, CONTRACT)], now=now).allowed
