"""The store's attestation ledger: the transparency log in the catalog, and attestations as artifacts.

Every signed envelope lives twice: in the transparency log (the catalog's append-only
``attestations`` log, with signed checkpoints in ``attestations.checkpoints``), which
is what makes it trustworthy, and as an artifact (kind ``attestation``, or ``override``
for a person's override) whose digest is the SHA-256 of the envelope's bytes, whose
parents are the package and the evidence, and whose top-level metadata ``subject``,
``predicate_type``, ``policy``, ``verdict``, ``log`` and ``index`` make it findable:
``store.artifacts.find("attestation", where={"subject": digest})``.

Reading trusts the log, not the index: ``logged(store, subject)`` takes each
artifact's log entry, checks it is the artifact's bytes, proves its inclusion in the
newest signed checkpoint and verifies its signature against the trusted keys. A
process keeps one reader per log (its Merkle tree grows by the new checkpoint
records only) and the attestations it verified, so admission at replica start is a
few catalog reads, not a pass over the log.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from factory.errors import FactoryError, MetaConflictError, NotFoundError, VerificationError
from factory.gates.attestations import Attestation, open_attestation
from factory.gates.dsse import Envelope
from factory.gates.keys import KeyRing, TrustedKeys
from factory.gates.log import Appended, TransparencyLog
from factory.gates.merkle import leaf_hash
from factory.store import ArtifactKind, register_kind

if TYPE_CHECKING:
    from factory.store import Artifact, Store

__all__ = ["LOG_NAME", "OVERRIDE_KIND", "Logged", "attestation_log", "log_origin", "record_attestations",
           "logged", "latest_results", "attestation_signer"]

LOG_NAME = "attestations"
OVERRIDE_KIND = register_kind("override", "a person's signed acceptance of a failed gate, in the transparency log")
_ORIGIN_KEY = "gates:log-origin"
_KINDS = (str(ArtifactKind.ATTESTATION), OVERRIDE_KIND)
_READERS: dict[tuple, TransparencyLog] = {}
_VERIFIED: OrderedDict[tuple[str, bytes], Attestation] = OrderedDict()
_VERIFIED_MAX = 8192
_LOCK = threading.Lock()


def log_origin(store: Store, *, create: bool = True) -> str | None:
    """The log's origin line, made once per catalog (``factory/attestations/<id>``) and kept in its metadata.

    ``create=False`` reads it only (``None`` while nothing was ever logged).
    """
    origin = store.catalog.meta(_ORIGIN_KEY)
    if origin is None and create:
        try:
            store.catalog.set_meta(_ORIGIN_KEY, f"factory/attestations/{uuid.uuid4().hex[:16]}", expected=None)
        except MetaConflictError:
            pass  # another process named it first; theirs stands
        origin = store.catalog.meta(_ORIGIN_KEY)
    return origin


def _keys(store: Store, keys: KeyRing | None) -> KeyRing:
    return keys if keys is not None else KeyRing.from_settings(store.settings)


def _fingerprint(trust: TrustedKeys) -> tuple:
    return tuple(sorted((k.keyid, k.status, k.retired_at) for k in trust))


def attestation_log(store: Store, *, keys: KeyRing | None = None, writer: bool = False) -> TransparencyLog:
    """The store's transparency log, verified against ``keys``' trusted keys (default: ``Settings.keys``).

    Readers are kept per process (per catalog, origin and set of trusted keys), so the
    Merkle tree is read once and then extended; ``writer=True`` gives a log that can
    append, signed with the ``log`` key.
    """
    keys = _keys(store, keys)
    # A reader of a catalog that never logged anything names no origin (and writes nothing): its log is empty.
    origin = log_origin(store, create=writer) or "factory/attestations/none-yet"
    if writer:
        signer = keys.signer("log")
        return TransparencyLog.on_catalog(store.catalog, LOG_NAME, origin=origin, trust=keys.trusted(), signer=signer)
    trust = keys.trusted()
    cache_key = (type(store.catalog).__name__, store.catalog.location, origin, _fingerprint(trust))
    with _LOCK:
        log = _READERS.get(cache_key)
        if log is None:
            log = _READERS[cache_key] = TransparencyLog.on_catalog(store.catalog, LOG_NAME, origin=origin,
                                                                    trust=trust)
    return log


def attestation_signer(store: Store, keys: KeyRing | None = None):
    """The key attestations are signed with (``attestation`` in the key folder, made on first use)."""
    return _keys(store, keys).signer("attestation")


def record_attestations(store: Store, envelopes: Sequence[Envelope], appended: Appended, *,
                        fields: Sequence[dict[str, Any]], parents: Sequence[Iterable[str]],
                        kind: str = str(ArtifactKind.ATTESTATION)) -> list[Artifact]:
    """Record each appended envelope as an artifact: its bytes as a blob, findable by its fields.

    ``fields[i]`` (subject, predicate_type, policy, verdict, ...) and ``parents[i]``
    belong to ``envelopes[i]``, which the log holds at ``appended.first + i``.
    """
    out = []
    origin = log_origin(store)
    for i, envelope in enumerate(envelopes):
        data = envelope.to_json()
        digest = store.blobs.put_bytes(data)
        metadata = {**fields[i], "log": origin, "index": appended.first + i, "size": len(data)}
        out.append(store.artifacts.add(kind, digest=digest, metadata=metadata, parents=parents[i],
                                       name=fields[i].get("policy") or None))
    return out


@dataclass(frozen=True)
class Logged:
    """An attestation artifact, and what checking it against the log found.

    ``attestation`` is set when the entry is the artifact's bytes, proven in the newest
    signed checkpoint and signed by a trusted key; otherwise ``problem`` says why not.
    """

    digest: str
    kind: str
    index: int
    policy: str
    predicate_type: str
    verdict: str
    attestation: Attestation | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.attestation is not None


def _check(log: TransparencyLog, artifact: Artifact) -> Attestation:
    index = artifact.metadata.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise VerificationError("its record names no log index")
    _, _, entry = log.prove(index, refresh=False)  # raises when the entry is gone, changed or not checkpointed
    if "sha256:" + hashlib.sha256(entry).hexdigest() != artifact.digest:
        raise VerificationError(f"log entry {index} holds other bytes than this attestation")
    leaf = leaf_hash(entry)
    cache_key = (str(id(log)), leaf)
    with _LOCK:
        cached = _VERIFIED.get(cache_key)
        if cached is not None:
            _VERIFIED.move_to_end(cache_key)
    if cached is not None:
        return cached
    att = open_attestation(entry, log.trust)
    if att.subject_digest != artifact.metadata.get("subject") \
            or att.predicate_type != artifact.metadata.get("predicate_type"):
        raise VerificationError("its record's subject or predicate type differs from the signed statement")
    att = Attestation(att.envelope, att.key, att.subject_name, att.subject_digest, att.predicate_type,
                      att.predicate, att.evaluated_at, index)
    with _LOCK:
        _VERIFIED[cache_key] = att
        if len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)
    return att


def logged(store: Store, subject: str, *, keys: KeyRing | None = None,
           kinds: Sequence[str] = _KINDS) -> list[Logged]:
    """Every attestation (and override) about ``subject``, checked against the log, in log order."""
    log = attestation_log(store, keys=keys)
    try:
        log.tree()  # the newest checkpoint, read once for every entry below
    except VerificationError:
        pass  # each entry then reports the problem itself
    out = []
    for kind in kinds:
        for artifact in store.artifacts.find(kind, where={"subject": subject}):
            meta = artifact.metadata
            try:
                att, problem = _check(log, artifact), None
            except (VerificationError, NotFoundError) as exc:
                att, problem = None, str(exc)
            except FactoryError as exc:  # an envelope that no longer parses, a key problem
                att, problem = None, f"{type(exc).__name__}: {exc}"
            out.append(Logged(artifact.digest, kind, int(meta.get("index", -1)), str(meta.get("policy", "")),
                              str(meta.get("predicate_type", "")), str(meta.get("verdict", "")), att, problem))
    return sorted(out, key=lambda entry: entry.index)


def latest_results(store: Store, subject: str, *, keys: KeyRing | None = None) -> tuple[list[Logged], list[Logged]]:
    """The newest logged result per policy about ``subject``, and every override, each checked against the log."""
    entries = logged(store, subject, keys=keys)
    newest: dict[str, Logged] = {}
    for entry in entries:
        if entry.kind != OVERRIDE_KIND:
            newest[entry.policy] = entry  # log order: the later entry wins
    return list(newest.values()), [e for e in entries if e.kind == OVERRIDE_KIND]
