"""Environment policies in the store, and admission: may this package run in that environment?

An environment policy is an ``environment-policy`` artifact behind the ref
``policy/env/<env>``, so a change to what an environment requires is a ref move: who,
when and why are in its history, and a refused move is recorded too. The defaults
(``DEFAULT_ENVIRONMENTS``: dev, staging, prod) are written on first use, as a ref move
like any other. An environment whose model aliases are protected (``model/*/prod``,
``model/*/staging`` by default) gets its policy ref protected for the same actors when
it is first written, so only they may change what it requires.

``admit(store, digest, env)`` reads the environment's policy and every attestation about
the package, each checked against the transparency log (its entry, its inclusion in the
newest signed checkpoint, its signature by a trusted key; see ``ledger``), and decides
(``admission.decide``): allowed only when every requirement is met; the default is deny.
Serving calls it at deploy time and when a replica loads a model: after the first call
a process reads only what changed (new checkpoint records, the refs), so it stays cheap.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from factory.errors import InvalidInputError, NotFoundError, RefConflictError, RefProtectedError
from factory.gates.admission import DEFAULT_ENVIRONMENTS, Admission, EnvironmentPolicy, decide
from factory.gates.attestations import OVERRIDE_TYPE
from factory.gates.ledger import logged
from factory.store import register_kind

if TYPE_CHECKING:
    from factory.gates.keys import KeyRing
    from factory.store import RefChange, Store

__all__ = ["ENVIRONMENT_KIND", "ENV_PREFIX", "environment", "list_environments", "set_environment", "admit"]

log = logging.getLogger(__name__)

ENVIRONMENT_KIND = register_kind("environment-policy", "what an environment requires before it serves a package")
ENV_PREFIX = "policy/env/"
_PARSED: dict[str, EnvironmentPolicy] = {}  # by artifact digest: an artifact never changes
_LOCK = threading.Lock()


def _parse(store: Store, digest: str) -> EnvironmentPolicy:
    with _LOCK:
        cached = _PARSED.get(digest)
    if cached is None:
        artifact = store.artifacts.get(digest)
        cached = EnvironmentPolicy.model_validate(artifact.metadata)
        with _LOCK:
            _PARSED[digest] = cached
    return cached


def _record(store: Store, policy: EnvironmentPolicy) -> str:
    artifact = store.artifacts.add(ENVIRONMENT_KIND, metadata=policy.model_dump(mode="json"), name=policy.name)
    return artifact.digest


def _protect_like_models(store: Store, env: str) -> None:
    """Protect ``policy/env/<env>`` for the actors who may move ``model/*/<env>``, if anyone is restricted."""
    pattern = ENV_PREFIX + env
    rules = store.refs.rules()
    if any(r.pattern == pattern for r in rules):
        return
    probe = ["model", "m", env]
    actors = sorted({a for r in rules for a in r.actors
                     if len(parts := r.pattern.split("/")) == 3 and all(p in ("*", q) for p, q in zip(parts, probe))})
    if not actors:
        return
    try:
        store.refs.protect(pattern, actors)
    except RefProtectedError:
        pass  # another process protected it first, for actors that do not include us
    log.info("protected %s for %s, like model/*/%s", pattern, ", ".join(actors), env)


def environment(store: Store, name: str) -> EnvironmentPolicy:
    """The policy of environment ``name`` as its ref names it now (a default is written on first use)."""
    ref = ENV_PREFIX + name
    target = store.refs.get(ref)
    if target is not None:
        return _parse(store, target)
    default = DEFAULT_ENVIRONMENTS.get(name)
    if default is None:
        known = sorted({*DEFAULT_ENVIRONMENTS, *(r.name.removeprefix(ENV_PREFIX) for r in store.refs.list(ENV_PREFIX))})
        raise NotFoundError(f"no environment {name!r}: choose among {', '.join(known)}, or define it with "
                            "'factory gates env set FILE.yaml'")
    digest = _record(store, default)
    try:
        store.refs.set(ref, digest, expected=None, reason="the default policy, written on first use")
    except RefConflictError:
        return _parse(store, store.refs.require(ref))  # another process wrote it first
    _protect_like_models(store, name)
    return default


def list_environments(store: Store) -> dict[str, EnvironmentPolicy]:
    """Every environment's policy by name: the defaults (written on first use) and any configured ones."""
    names = {*DEFAULT_ENVIRONMENTS, *(r.name.removeprefix(ENV_PREFIX) for r in store.refs.list(ENV_PREFIX))}
    return {name: environment(store, name) for name in sorted(names)}


def set_environment(store: Store, policy: EnvironmentPolicy, *, reason: str) -> RefChange:
    """Make ``policy`` what its environment requires from now on (a ref move; protected refs are enforced)."""
    if not reason or not reason.strip():
        raise InvalidInputError(f"changing what {policy.name} requires needs a reason: say why (--reason TEXT)")
    ref = ENV_PREFIX + policy.name
    current = store.refs.get(ref)
    if current is None and policy.name in DEFAULT_ENVIRONMENTS:
        environment(store, policy.name)  # the default first, so the change shows against it in the history
        current = store.refs.get(ref)
    change = store.refs.set(ref, _record(store, policy), expected=current, reason=reason.strip())
    if current is None:
        _protect_like_models(store, policy.name)
    return change


def admit(store: Store, digest: str, env: str, *, keys: KeyRing | None = None,
          now: datetime | None = None) -> Admission:
    """Whether the package ``digest`` may run in ``env``: every requirement met by a verified, logged attestation.

    ``Admission.allowed`` is the answer; ``missing`` says, per predicate type, what is
    not met and why; ``counted`` are the attestations (overrides shown as such) that
    met a requirement. ``Admission.require()`` raises ``AdmissionDeniedError`` instead.
    """
    policy = environment(store, env)
    subject = store.artifacts.resolve(digest)
    entries = logged(store, subject, keys=keys)
    rejected: dict[str, str] = {}
    for entry in entries:
        if not entry.ok and entry.predicate_type != OVERRIDE_TYPE:  # an override that fails simply does not count
            rejected[entry.predicate_type] = f"log entry {entry.index}: {entry.problem}"
    when = now or (store.clock() if store.clock else datetime.now(UTC))
    return decide(policy, subject, [e.attestation for e in entries if e.ok], now=when, rejected=rejected)
