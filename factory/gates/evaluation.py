"""Evaluate a stored package against policies, and sign the results: the core of a gate run.

A package that cannot be opened (refused as unsafe, malformed, tampered) fails every
policy with that reason; a policy that raises fails with what it raised, so a broken
plugin can never let a package through. The gate run (a ``store.runs`` run) wraps
these two steps and appends the envelopes to the transparency log in one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from factory.errors import ContractViolationError, CorruptBlobError, FactoryError, UnsafePackageError
from factory.gates.attestations import attest
from factory.gates.dsse import Envelope
from factory.gates.keys import Signer
from factory.gates.policy import Policy, PolicyContext, PolicyResult, predicate_type_of

if TYPE_CHECKING:
    from factory.contract import PackageView

__all__ = ["evaluate", "evaluate_one", "sign_results", "policy_config"]

log = logging.getLogger(__name__)


def policy_config(policy: Policy) -> dict[str, Any]:
    """A policy's configuration as JSON data, when it exposes one (built-ins keep a pydantic ``config``)."""
    config = getattr(policy, "config", None)
    if config is None:
        return {}
    dump = getattr(config, "model_dump", None)
    return dump(mode="json") if dump else dict(config)


def _checked(policy: Policy, result: Any) -> PolicyResult:
    if not isinstance(result, PolicyResult):
        return PolicyResult.fail(policy, f"the policy returned a {type(result).__name__}, not a PolicyResult")
    if result.policy != policy.id:
        return PolicyResult.fail(policy, f"the policy returned a result for {result.policy!r}")
    return result


def evaluate(store: Any, digest: str, policies: Sequence[Policy], *, context: PolicyContext | None = None,
             on_result: Callable[[PolicyResult], None] | None = None) -> list[PolicyResult]:
    """Each policy's result for the package ``digest``, in the order given.

    ``on_result`` is called with each result as soon as it is known (progress). A digest
    that names no model raises (``NotFoundError``, ``InvalidInputError``): there is
    nothing to judge, and nothing should be attested.
    """
    from factory.contract import open_package

    context = context or PolicyContext(store)
    try:
        view = open_package(store, digest)
    except (UnsafePackageError, ContractViolationError, CorruptBlobError) as exc:
        # The package exists but the store will not hand it out: that is the finding, for every policy.
        results = [PolicyResult.fail(p, f"the package cannot be opened: {exc}") for p in policies]
        for result in results:
            if on_result is not None:
                on_result(result)
        return results
    if context.subject != view.digest:
        context = replace(context, subject=view.digest)
    results = []
    for policy in policies:
        result = evaluate_one(policy, view, context)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def evaluate_one(policy: Policy, view: PackageView, context: PolicyContext) -> PolicyResult:
    """One policy's result; a policy that raises FAILS with what it raised, never passes."""
    try:
        result = _checked(policy, policy.evaluate(view, context))
    except FactoryError as exc:
        result = PolicyResult.fail(policy, str(exc))
    except Exception as exc:  # a plugin may fail in any way; its failure must not read as a pass
        log.exception("policy %s raised on %s", policy.id, view.digest)
        result = PolicyResult.fail(policy, f"the policy raised {type(exc).__name__}: {exc}")
    log.info("policy %s on %s: %s %s", policy.id, view.digest, result.verdict, result.reason)
    return result


def sign_results(results: Sequence[PolicyResult], policies: Mapping[str, Policy] | Sequence[Policy], *,
                 subject_name: str, subject_digest: str, signer: Signer, at: datetime,
                 actor: str) -> list[Envelope]:
    """One signed attestation per result, ready to append to the log in one batch."""
    by_id = policies if isinstance(policies, Mapping) else {p.id: p for p in policies}
    envelopes = []
    for result in results:
        policy = by_id[result.policy]
        envelopes.append(attest(result, subject_name=subject_name, subject_digest=subject_digest,
                                predicate_type=predicate_type_of(policy), signer=signer, at=at, actor=actor,
                                config=policy_config(policy)))
    return envelopes

