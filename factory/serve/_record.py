"""A deployment's record in the store: what its replicas serve, followed by every replica.

The record is a ``deployment`` artifact (immutable: each change is a new one) behind the
ref ``deployment/<name>`` (a namespace of ``deployment`` artifacts), so every change keeps
its history and moves by compare-and-swap. With the environment's ref
``model/<model>/<env>`` it says everything a replica needs: the package that answers
unversioned requests (the ref's target), the other packages held (a rollout's
candidate), and the ``TrafficConfig`` that splits and shadows traffic between them.
Replicas poll both refs, so a change reaches each of them without a restart, on any
node that opens the store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from factory.errors import InvalidInputError, NotFoundError, RefConflictError
from factory.serve._router import TrafficConfig
from factory.serve._traffic import split, version_of
from factory.store import ArtifactKind, check_digest, register_ref_namespace

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["DeploymentRecord", "ServeState", "record_ref", "env_ref", "read_record", "write_record", "read_state",
           "set_traffic", "check_name", "check_env", "ROOT_APP", "MODEL_DEPLOYMENT"]

ROOT_APP = "factory-oip"  # the Serve application answering /v2 itself
MODEL_DEPLOYMENT = "factory-model"  # the deployment inside each model's Serve application
RECORD_PREFIX = "deployment/"
register_ref_namespace(RECORD_PREFIX + "*", ArtifactKind.DEPLOYMENT)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_ENV = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
Digest = Annotated[str, AfterValidator(check_digest)]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name == ROOT_APP:
        raise InvalidInputError(f"{name!r} cannot name a served model: use letters, digits, '.', '_' and '-' "
                                f"(and not {ROOT_APP!r}, which serves /v2 itself)")
    return name


def check_env(env: str) -> str:
    if not isinstance(env, str) or not _ENV.match(env):
        raise InvalidInputError(f"{env!r} is not an environment name: use lowercase letters, digits and '-', "
                                "e.g. dev, staging or prod")
    return env


def record_ref(name: str) -> str:
    return RECORD_PREFIX + name


def env_ref(model: str, env: str) -> str:
    """The ref whose target answers a model's unversioned requests in ``env``."""
    return f"model/{model}/{env}"


class DeploymentRecord(BaseModel):
    """A served model: its name, model and environment, the packages held and how traffic splits.

    ``versions``: packages held besides the environment's (at most ``max_versions`` in all).
    ``traffic``: how unversioned requests split between the versions held and which get a
    shadow copy; None sends every one to the environment's package.
    ``replicas``/``autoscale``/``max_versions`` are deployment settings, never contract fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["factory.deployment/v1"] = "factory.deployment/v1"
    name: Annotated[str, AfterValidator(check_name)]
    model: str = Field(min_length=1, max_length=128)
    env: Annotated[str, AfterValidator(check_env)]
    versions: tuple[Digest, ...] = ()
    traffic: TrafficConfig | None = None
    replicas: int | None = Field(None, ge=1, le=1024)
    autoscale: tuple[int, int] | None = None
    max_versions: int = Field(4, ge=1, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentRecord:
        if self.replicas is not None and self.autoscale is not None:
            raise ValueError("give either replicas or autoscale, not both")
        if self.autoscale is not None and not 0 <= self.autoscale[0] <= self.autoscale[1] >= 1:
            raise ValueError(f"autoscale {self.autoscale} must be MIN,MAX with 0 <= MIN <= MAX and MAX >= 1")
        if len(self.versions) + 1 > self.max_versions:
            raise ValueError(f"{len(self.versions)} extra versions and the environment's exceed max_versions "
                             f"({self.max_versions})")
        if self.traffic is not None and self.traffic.model != self.model:
            raise ValueError(f"the traffic config is for model {self.traffic.model!r}, not {self.model!r}")
        return self

    @property
    def url_path(self) -> str:
        return f"/v2/models/{self.name}"


@dataclass(frozen=True)
class ServeState:
    """What a replica follows: the record and the environment's package (``primary``), each with its digest."""

    record: DeploymentRecord
    record_digest: str
    primary: str

    @property
    def key(self) -> tuple[str, str]:
        return self.record_digest, self.primary

    @property
    def extra(self) -> tuple[str, ...]:
        return tuple(d for d in self.record.versions if d != self.primary)

    def traffic(self) -> TrafficConfig | None:
        """The traffic config to route by: None (all to ``primary``) when it gives weight to a version
        not held (a promotion under way); shadows of versions not held are left out."""
        config = self.record.traffic
        if config is None:
            return None
        held = {version_of(d) for d in (self.primary, *self.record.versions)}
        if any(w > 0 and v not in held for v, w in config.weights.items()):
            return None
        if set(config.shadows) <= held:
            return config
        return config.model_copy(update={"shadows": {v: p for v, p in config.shadows.items() if v in held}})


_RECORDS: dict[str, DeploymentRecord] = {}  # by artifact digest: content-addressed, so never stale


def read_record(store: Store, name: str) -> tuple[DeploymentRecord, str] | None:
    """The current record of ``name`` and its artifact digest, or None when nothing is deployed as it.

    Replicas call this every poll: one ref read, and the record itself only when it changed.
    """
    digest = store.refs.get(record_ref(check_name(name)))
    if digest is None:
        return None
    record = _RECORDS.get(digest)
    if record is None:
        record = DeploymentRecord.model_validate(store.artifacts.get(digest).metadata)
        if len(_RECORDS) >= 64:
            _RECORDS.clear()
        _RECORDS[digest] = record
    return record, digest


def write_record(store: Store, record: DeploymentRecord, *, expected: str | None, reason: str) -> str:
    """Record ``record`` and move ``deployment/<name>`` to it if it still points at ``expected``."""
    artifact = store.artifacts.add("deployment", metadata=record, name=record.name, parents=record.versions)
    if artifact.digest != expected:
        store.refs.set(record_ref(record.name), artifact.digest, expected=expected, reason=reason)
    return artifact.digest


def read_state(store: Store, name: str) -> ServeState:
    """The record of ``name`` with its environment's package: what a replica must serve now."""
    found = read_record(store, name)
    if found is None:
        raise NotFoundError(f"nothing is deployed as {name!r}: deploy it with 'factory serve deploy DIGEST --env ENV'")
    record, digest = found
    primary = store.refs.get(env_ref(record.model, record.env))
    if primary is None:
        raise NotFoundError(f"ref {env_ref(record.model, record.env)!r} is not set, so {name!r} has no package to "
                            f"serve in {record.env}: deploy one with 'factory serve deploy DIGEST --env {record.env}'")
    return ServeState(record, digest, primary)


def set_traffic(store: Store, name: str, traffic: TrafficConfig | Mapping[str, float] | None, *,
                versions: tuple[str, ...] | None = None, reason: str = "", attempts: int = 5) -> DeploymentRecord:
    """Change which packages ``name`` holds and how its unversioned traffic splits between them.

    ``traffic``: a ``TrafficConfig`` (a rollout's: applied only if its generation is newer
    than the record's), weights by version written by hand (any non-negative numbers,
    made into percentages of a new generation), or None to send everything to the
    environment's package. ``versions`` (digests) replaces the packages held besides the
    environment's. Every replica applies it within its poll interval, without a restart.
    The move is a compare-and-swap on ``deployment/<name>``, retried when another change
    went in first.
    """
    for _ in range(attempts):
        found = read_record(store, name)
        if found is None:
            raise NotFoundError(f"nothing is deployed as {name!r}: deploy it before changing its traffic")
        record, digest = found
        current = record.traffic
        config = traffic
        if isinstance(traffic, Mapping):
            config = split(record.model, traffic, (current.generation if current else 0) + 1)
        if isinstance(config, TrafficConfig) and not config.supersedes(current):
            return record  # an older generation arriving late changes nothing
        update: dict[str, object] = {"traffic": config}
        if versions is not None:
            update["versions"] = tuple(versions)
        try:
            new = DeploymentRecord.model_validate({**record.model_dump(), **update})
        except ValueError as exc:
            raise InvalidInputError(f"cannot change the traffic of {name!r}: {exc}") from None
        primary = store.refs.get(env_ref(new.model, new.env))
        held = {version_of(d) for d in (*new.versions, *([primary] if primary else []))}
        named = set() if config is None else {v for v, w in config.weights.items() if w > 0} | set(config.shadows)
        unknown = sorted(named - held)
        if unknown:
            raise InvalidInputError(f"traffic names versions {unknown} that {name!r} does not hold ({sorted(held)}): "
                                    "add their packages to versions first")
        try:
            write_record(store, new, expected=digest, reason=reason or "traffic change")
        except RefConflictError:
            continue
        return new
    raise RefConflictError(f"the traffic of {name!r} kept changing under this change: retry", record_ref(name))
