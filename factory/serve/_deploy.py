"""Deploy, list and delete served models on a connected Ray cluster.

``deploy`` checks admission, points the environment's ref at the package, writes the
deployment record, and starts the model's Serve application only when it is not
running yet or its replica settings changed (``serve.run`` restarts every replica, so a
new package for a running application travels through the store instead: its replicas
load it and switch within their poll interval). It returns once the new version
answers ``ready`` over HTTP, and undoes its ref moves if that never happens.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from factory.errors import FactorySystemError, InvalidInputError, NotFoundError
from factory.serve._admission import require_admitted
from factory.serve._record import (
    MODEL_DEPLOYMENT,
    ROOT_APP,
    DeploymentRecord,
    check_env,
    check_name,
    env_ref,
    read_record,
    record_ref,
    write_record,
)
from factory.serve._server import APPLY_FAILED
from factory.serve._traffic import version_of

if TYPE_CHECKING:
    from factory.contract import Contract
    from factory.settings import Settings
    from factory.store import Store

__all__ = ["Deployed", "DeploymentStatus", "deploy", "undeploy", "deployments", "ensure_serve", "serve_url",
           "package_contract", "example_request", "replica_settings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deployed:
    """The outcome of ``deploy``: where the model answers, and a request that works."""

    name: str
    model: str
    env: str
    digest: str
    version: str
    url: str
    curl: str
    restarted: bool


@dataclass(frozen=True)
class DeploymentStatus:
    """One served model as ``factory serve list`` shows it."""

    name: str
    model: str
    env: str
    primary: str | None
    versions: tuple[str, ...]
    traffic: dict[str, float]
    status: str
    replicas: int
    url: str


def package_contract(store: Store, digest: str) -> Contract:
    """The contract of a stored model package, read without loading its weights."""
    from factory.contract import Contract, ModelPackageMeta

    artifact = store.artifacts.get(digest)
    if artifact.kind != "model":
        raise InvalidInputError(f"{digest} is a {artifact.kind} artifact, not a model package: deploy a model digest")
    meta = artifact.meta(ModelPackageMeta)
    return Contract.from_json(store.blobs.get(meta.files["contract.json"]))


def example_request(contract: Contract) -> dict[str, Any]:
    """A one-row ``infer`` body that the contract accepts (zeros, false, "x")."""
    import math

    inputs = []
    for spec in contract.inputs:
        shape = [1, *(1 if d == -1 else d for d in spec.shape[1:])]
        value: Any = {"BOOL": False, "BYTES": "x"}.get(str(spec.dtype), 0)
        inputs.append({"name": spec.name, "datatype": str(spec.dtype), "shape": shape,
                       "data": [value] * math.prod(shape)})
    return {"inputs": inputs}


def serve_url(settings: Settings) -> str:
    """The base URL of Serve's HTTP proxy (the running one's, else the settings')."""
    host, port = settings.serve_host, settings.serve_port
    try:
        from ray.serve.context import _get_global_client

        config = _get_global_client().http_config
        host, port = config.host, config.port
    except Exception:  # Serve not started by us, or a Ray version without this helper
        pass
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def ensure_serve(settings: Settings) -> str:
    """Start Serve (HTTP on the settings' host and port) unless it runs, and the ``/v2`` root app; the base URL."""
    from ray import serve

    from factory.serve._app import OipRoot

    status = serve.status()
    if not status.proxies:  # Serve is not running on this cluster yet
        serve.start(http_options={"host": settings.serve_host, "port": settings.serve_port})
        status = serve.status()
    if ROOT_APP not in status.applications:
        serve.run(OipRoot.bind(), name=ROOT_APP, route_prefix="/v2")
    return serve_url(settings)


def _serve_options(contract: Contract, record: DeploymentRecord) -> dict[str, Any]:
    """Everything whose change needs ``serve.run`` (and so restarts replicas)."""
    res = contract.resources
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": res.cpus, "num_gpus": res.gpus, "memory": res.memory_mb * 2**20},
        "max_ongoing_requests": max(16, 2 * res.max_batch_size),
        "max_constructor_retry_count": 3,  # a replica that cannot load its package will not load it later either
    }
    if record.autoscale is not None:
        low, high = record.autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "target_ongoing_requests": max(2, res.max_batch_size // 2)}
    else:
        options["num_replicas"] = record.replicas or 1
    return options


def replica_settings(store: Store) -> Settings:
    """The store's settings with its home (and a local catalog) made absolute, as replicas anywhere need them."""
    import dataclasses
    import os

    catalog = store.settings.catalog
    if catalog is not None and "://" not in catalog:
        catalog = os.path.abspath(catalog)
    return dataclasses.replace(store.settings, home=store.home, catalog=catalog)


def deploy(store: Store, digest: str, env: str, *, name: str | None = None, replicas: int | None = None,
           autoscale: tuple[int, int] | None = None, max_versions: int = 4, timeout_s: float = 300.0,
           poll_s: float = 0.25) -> Deployed:
    """Serve package ``digest`` as ``env``'s version of its model, under ``name`` (default: the contract's).

    Serve's HTTP proxy, when this starts it, listens where the store's settings say
    (FACTORY_SERVE_HOST, FACTORY_SERVE_PORT); replicas open the store from the same settings.
    """
    from ray import serve

    from factory.serve._app import ModelDeployment

    digest = store.artifacts.resolve(digest)
    env = check_env(env)
    contract = package_contract(store, digest)
    name = check_name(name or contract.name)
    require_admitted(store, digest, env)
    previous = read_record(store, name)
    if previous is not None and (previous[0].model, previous[0].env) != (contract.name, env):
        raise InvalidInputError(f"{name!r} already serves {previous[0].model} in {previous[0].env}: delete it first "
                                f"('factory serve delete {name}') or deploy under another --name")
    try:
        record = DeploymentRecord(name=name, model=contract.name, env=env, replicas=replicas, autoscale=autoscale,
                                  max_versions=max_versions)
    except ValueError as exc:
        raise InvalidInputError(f"cannot deploy {name!r}: {exc}") from None

    settings = replica_settings(store)
    url = ensure_serve(settings) + record.url_path
    ref = env_ref(contract.name, env)
    old_primary = store.refs.get(ref)
    options = _serve_options(contract, record)
    running = name in serve.status().applications
    unchanged = previous is not None and old_primary is not None and running and options == _serve_options(
        package_contract(store, old_primary), previous[0])
    if old_primary != digest:
        store.refs.set(ref, digest, expected=old_primary, reason=f"factory serve deploy as {name}")
    record_digest = write_record(store, record, expected=previous[1] if previous else None,
                                 reason=f"factory serve deploy {digest}")
    try:
        if not unchanged:
            app = ModelDeployment.options(**options).bind(name, settings, poll_s)
            serve.run(app, name=name, route_prefix=record.url_path)
        _wait_ready(f"{url}/versions/{version_of(digest)}/ready", timeout_s)
    except Exception as exc:
        if not running:
            serve.delete(name)
        _undo(store, ref, digest, old_primary, name, record_digest, previous)
        raise FactorySystemError(f"deploying {digest} as {name!r} failed, refs restored: {_first_line(exc)}") from exc
    body = json.dumps(example_request(contract), separators=(",", ":"))
    curl = f"curl -s -X POST {url}/infer -H 'Content-Type: application/json' -d {shlex.quote(body)}"
    log.info("deployed %s as %s in %s at %s", digest, name, env, url)
    return Deployed(name, contract.name, env, digest, version_of(digest), url, curl, restarted=not unchanged)


def _wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            body = exc.read(4000).decode(errors="replace")
            try:
                last = f"{exc.code}: {json.loads(body)['error']}"
            except (ValueError, KeyError, TypeError):
                last = f"{exc.code}: {body}"
            if APPLY_FAILED in last:  # the replicas tried and failed: waiting longer will not help
                raise RuntimeError(last) from None
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s (last: {last or 'no answer'})")


def _undo(store: Store, ref: str, digest: str, old_primary: str | None, name: str, record_digest: str,
          previous: tuple[DeploymentRecord, str] | None) -> None:
    """Put the refs back where ``deploy`` found them, if nobody moved them since."""
    try:
        if old_primary != digest:
            if old_primary is None:
                store.refs.delete(ref, expected=digest, reason="factory serve deploy failed")
            else:
                store.refs.set(ref, old_primary, expected=digest, reason="factory serve deploy failed")
        if previous is None:
            store.refs.delete(record_ref(name), expected=record_digest, reason="factory serve deploy failed")
        elif previous[1] != record_digest:
            store.refs.set(record_ref(name), previous[1], expected=record_digest, reason="factory serve deploy failed")
    except Exception as exc:  # someone moved them meanwhile: theirs stands
        log.warning("could not restore the refs after a failed deploy: %s", exc)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__).strip()


def undeploy(store: Store, name: str) -> None:
    """Stop serving ``name`` and drop its record (the environment's ref stays where it is)."""
    from ray import serve

    name = check_name(name)
    found = read_record(store, name)
    running = name in serve.status().applications
    if found is None and not running:
        raise NotFoundError(f"nothing is served as {name!r}: see 'factory serve list'")
    if running:
        serve.delete(name)
    if found is not None:
        store.refs.delete(record_ref(name), expected=found[1], reason="factory serve delete")


def deployments(store: Store) -> list[DeploymentStatus]:
    """Every recorded deployment, with its Serve status and running replicas."""
    from ray import serve

    apps = serve.status().applications
    base = serve_url(store.settings)
    out = []
    for ref in store.refs.list("deployment/"):
        found = read_record(store, ref.name.removeprefix("deployment/"))
        if found is None:  # deleted meanwhile
            continue
        record = found[0]
        primary = store.refs.get(env_ref(record.model, record.env))
        app = apps.get(record.name)
        replicas = 0
        status = "NOT RUNNING"
        if app is not None:
            status = str(getattr(app.status, "value", app.status))
            deployment = app.deployments.get(MODEL_DEPLOYMENT)
            if deployment is not None:
                replicas = sum(n for state, n in deployment.replica_states.items()
                               if str(getattr(state, "value", state)) == "RUNNING")
        held = tuple(dict.fromkeys(version_of(d) for d in (*([primary] if primary else []), *record.versions)))
        out.append(DeploymentStatus(record.name, record.model, record.env, primary, held, dict(record.traffic),
                                    status, replicas, base + record.url_path))
    return out
