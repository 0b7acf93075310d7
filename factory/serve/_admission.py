"""Admission and loading: a package is served only if its environment's policy admits it.

Checked twice: by ``deploy`` before anything moves, and by every replica before it
loads a package (a replica started later, or on another node, checks for itself).
``factory.gates.admit(digest, env)`` decides; it is built on another branch, and until
it is merged the check logs that admission is not available and lets the package
through (see ``_gates_admit``: the one place pass two wires).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from factory.errors import NotAdmittedError
from factory.serve._versions import LoadedVersion

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["require_admitted", "load_version"]

log = logging.getLogger(__name__)

Admit = Callable[["Store", str, str], Any]


def _gates_admit() -> Admit | None:
    """``factory.gates.admit``, or None while the gates package does not provide it yet."""
    import factory.gates

    return getattr(factory.gates, "admit", None)


def require_admitted(store: Store, digest: str, env: str, *, admit: Admit | None = None) -> None:
    """Raise ``NotAdmittedError`` naming what is missing unless ``env`` admits package ``digest``.

    ``admit(store, digest, env)`` returns a decision: a bool, or an object with ``allowed``
    (and ``missing``, the requirements not met); or it raises a ``UserError`` itself.
    """
    admit = admit or _gates_admit()
    if admit is None:
        log.warning("admission is not available (factory.gates.admit is missing): %s admitted to %s unchecked",
                    digest, env)
        return
    decision = admit(store, digest, env)
    allowed = decision if isinstance(decision, bool) else getattr(decision, "allowed", None)
    if allowed is True:
        return
    missing = tuple(_requirement(m) for m in getattr(decision, "missing", ()) or ())
    detail = f": missing {', '.join(missing)}" if missing else ""
    raise NotAdmittedError(f"package {digest} is not admitted to {env}{detail}; run its gates for {env} "
                           f"('factory gates run {digest} --set {env}') or deploy it to another environment",
                           digest, env, missing)


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
