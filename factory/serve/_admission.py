"""Admission and loading: a package is served only if its environment's policy admits it.

Checked twice: by ``deploy`` (and ``factory rollout start``) before anything moves, and
by every replica before it loads a package (a replica started later, or on another
node, checks for itself). ``factory.gates.admit(store, digest, env)`` decides: every
attestation the environment's policy requires, verified against the transparency log
with the trusted keys of the process (``FACTORY_KEYS``: on a cluster, every node needs
the trusted public keys). Default deny: a package with nothing attested is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from factory.errors import NotAdmittedError
from factory.serve._versions import LoadedVersion

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["require_admitted", "load_version"]

Admit = Callable[["Store", str, str], Any]


def require_admitted(store: Store, digest: str, env: str, *, admit: Admit | None = None) -> None:
    """Raise ``NotAdmittedError`` naming what is missing unless ``env`` admits package ``digest``.

    ``admit(store, digest, env)`` returns a decision: a bool, or an object with ``allowed``
    (and ``missing``, the requirements not met); or it raises a ``UserError`` itself.
    """
    if admit is None:
        from factory.gates import admit
    decision = admit(store, digest, env)
    allowed = decision if isinstance(decision, bool) else getattr(decision, "allowed", None)
    if allowed is True:
        return
    missing = list(getattr(decision, "missing", ()) or ())
    if missing:
        detail = f": missing {', '.join(_requirement(m) for m in missing)}"
    else:
        detail = f" ({decision.explain()})" if hasattr(decision, "explain") else ""
    raise NotAdmittedError(f"package {digest} is not admitted to {env}{detail}; run its gates for {env} "
                           f"('factory gates run {digest} --set {env}') or deploy it to another environment",
                           digest, env, tuple(getattr(m, "predicate_type", str(m)) for m in missing))


def _requirement(missing: Any) -> str:
    """One missing requirement in words: its predicate type, and why when the decision says."""
    kind = getattr(missing, "predicate_type", None)
    reason = getattr(missing, "reason", None)
    if kind is None:
        return str(missing)
    return f"{kind} ({reason})" if reason else str(kind)


def load_version(store: Store, env: str, digest: str, *, admit: Admit | None = None) -> LoadedVersion:
    """Check admission, then load the package from the store, ready to predict."""
    from factory.contract import load

    require_admitted(store, digest, env, admit=admit)
    model = load(store, digest)
    return LoadedVersion(model.digest, model.contract, model)
