"""cluster/: every manifest parses and wires what a cluster needs; a typo or a missing variable fails here.

The checks read the manifests as Kubernetes would (YAML, anchors resolved) and follow
each ``valueFrom`` to the ConfigMap or Secret it names, so a misspelt variable, key or
object name is caught before anyone applies the files to a cluster.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

import ray

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
SETTINGS = Path(__file__).resolve().parents[2] / "factory" / "settings.py"
REQUIRED = ("FACTORY_HOME", "FACTORY_CATALOG")
# Serve's proxies on every node load factory's middleware (a request whose replica died is sent again).
PROXY_CALLBACK = ("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "factory.serve.proxy_middlewares")
NOT_MANIFESTS = {"ray-up.yaml", "runtime_env.yaml"}
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}


def _manifests() -> dict[str, list[dict]]:
    """Every Kubernetes manifest in cluster/, by file name."""
    out = {}
    for path in sorted(CLUSTER.glob("*.yaml")):
        if path.name not in NOT_MANIFESTS:
            out[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


def _known_variables() -> set[str]:
    """The FACTORY_* variables that Settings reads: any other FACTORY_ name is a typo."""
    return set(re.findall(r'"(FACTORY_[A-Z0-9_]+)"', SETTINGS.read_text()))


def _cluster_specs(doc: dict) -> list[tuple[str, dict]]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "RayCluster":
        return [("spec", spec)]
    if doc["kind"] == "RayJob":
        return [("spec.rayClusterSpec", spec.get("rayClusterSpec") or {})]
    return [("spec.rayClusterConfig", spec.get("rayClusterConfig") or {})]


def _groups(cluster: dict) -> list[tuple[str, dict]]:
    groups = [("head", cluster.get("headGroupSpec") or {})]
    groups += [(f"worker group {g.get('groupName')!r}", g) for g in cluster.get("workerGroupSpecs") or []]
    return groups


def problems(manifests: dict[str, list[dict]], ray_version: str) -> list[str]:
    """What would stop a cluster built from ``manifests`` from running factory; empty when nothing."""
    found: list[str] = []
    docs = [(name, d) for name, ds in manifests.items() for d in ds]
    data = {(d["kind"], d["metadata"]["name"]): {**(d.get("data") or {}), **(d.get("stringData") or {})}
            for _, d in docs if d.get("kind") in ("ConfigMap", "Secret")}
    services = {d["metadata"]["name"] for _, d in docs if d.get("kind") == "Service"}
    known = _known_variables()
    clusters = 0

    def resolve(where: str, entry: dict) -> str | None:
        if "value" in entry:
            return str(entry["value"])
        source = entry.get("valueFrom") or {}
        for ref_key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = source.get(ref_key)
            if ref is None:
                continue
            held = data.get((kind, ref.get("name")))
            if held is None:
                found.append(f"{where}: {entry['name']} reads {kind} {ref.get('name')!r}, which no manifest defines")
            elif ref.get("key") not in held:
                found.append(f"{where}: {entry['name']} reads key {ref.get('key')!r} of {kind} {ref.get('name')!r}, "
                             f"which has only {sorted(held)}")
            else:
                return str(held[ref["key"]])
            return None
        found.append(f"{where}: {entry['name']} has neither a value nor a ConfigMap/Secret reference")
        return None

    for name, doc in docs:
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        if not api.startswith("ray.io/"):
            continue
        if api != "ray.io/v1":
            found.append(f"{name}: {kind} uses apiVersion {api}; KubeRay >= 1.1 serves ray.io/v1")
        if kind not in RAY_KINDS:
            found.append(f"{name}: unknown KubeRay kind {kind!r} (expected one of {sorted(RAY_KINDS)})")
            continue
        for path, cluster in _cluster_specs(doc):
            clusters += 1
            if str(cluster.get("rayVersion")) != ray_version:
                found.append(f"{name}: {path}.rayVersion is {cluster.get('rayVersion')!r}, the installed Ray is {ray_version}")
            groups = _groups(cluster)
            if len(groups) < 2:
                found.append(f"{name}: {path} has no worker group")
            for group_name, group in groups:
                containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
                if not containers:
                    found.append(f"{name}: {group_name} has no containers")
                for container in containers:
                    where = f"{name}: {group_name}, container {container.get('name')!r}"
                    env = {e["name"]: e for e in container.get("env") or []}
                    for variable in REQUIRED:
                        if variable not in env:
                            found.append(f"{where}: {variable} is not set")
                    for variable in env:
                        if variable.startswith("FACTORY_") and variable not in known:
                            found.append(f"{where}: {variable} is not a factory setting (known: {sorted(known)})")
                    values = {v: resolve(where, env[v]) for v in env}
                    variable, wanted = PROXY_CALLBACK
                    if variable in env and values.get(variable) != wanted:
                        found.append(f"{where}: {variable} is {values.get(variable)!r}, not {wanted!r}")
                    elif variable not in env:
                        found.append(f"{where}: {variable} is not set, so Serve's proxy there does not retry "
                                     f"requests whose replica died (set it to {wanted})")
                    home, catalog = values.get("FACTORY_HOME"), values.get("FACTORY_CATALOG")
                    if home is not None and not home.startswith("s3://"):
                        found.append(f"{where}: FACTORY_HOME is {home!r}, not the store on S3 (s3://BUCKET/PREFIX)")
                    if catalog is not None:
                        url = urlsplit(catalog)
                        if url.scheme not in ("postgresql", "postgres"):
                            found.append(f"{where}: FACTORY_CATALOG is not a postgresql:// URL")
                        elif services and url.hostname not in services:
                            found.append(f"{where}: the catalog host {url.hostname!r} is none of the Services {sorted(services)}")
    if not clusters:
        found.append("no RayCluster or RayJob manifest in cluster/")
    return found


@pytest.fixture
def manifests():
    return _manifests()


def test_every_manifest_wires_the_store_on_every_group(manifests):
    """Each RayCluster and RayJob is ray.io/v1 at the installed Ray, with the store and catalog set on every group."""
    kinds = {d["kind"] for docs in manifests.values() for d in docs}
    assert {"RayCluster", "RayJob", "Deployment", "Service", "PersistentVolumeClaim", "Secret", "ConfigMap"} <= kinds
    assert problems(manifests, ray.__version__) == []


def _container(manifests, file: str, group: str) -> dict:
    doc = next(d for d in manifests[file] if d["kind"] in RAY_KINDS)
    cluster = _cluster_specs(doc)[0][1]
    spec = cluster["headGroupSpec"] if group == "head" else cluster["workerGroupSpecs"][0]
    return spec["template"]["spec"]["containers"][0]


def _without(env: list[dict], name: str) -> list[dict]:
    return [e for e in env if e["name"] != name]


def _renamed(env: list[dict], old: str, new: str) -> list[dict]:
    return [{**e, "name": new} if e["name"] == old else e for e in env]


def _secret(manifests, name: str) -> dict:
    return next(d for docs in manifests.values() for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name)


MUTATIONS = {
    "catalog-missing-on-workers": lambda m: _container(m, "raycluster.yaml", "worker").update(
        env=_without(_container(m, "raycluster.yaml", "worker")["env"], "FACTORY_CATALOG")),
    "home-missing-on-the-job-head": lambda m: _container(m, "rayjob.yaml", "head").update(
        env=_without(_container(m, "rayjob.yaml", "head")["env"], "FACTORY_HOME")),
    "variable-typo": lambda m: _container(m, "rayjob.yaml", "worker").update(
        env=_renamed(_container(m, "rayjob.yaml", "worker")["env"], "FACTORY_CATALOG", "FACTORY_CATALGO")),
    "secret-key-typo": lambda m: _container(m, "raycluster.yaml", "head")["env"][1]["valueFrom"]["secretKeyRef"].update(key="ulr"),
    "secret-name-typo": lambda m: _secret(m, "factory-catalog")["metadata"].update(name="factory-catalogue"),
    "catalog-host-typo": lambda m: _secret(m, "factory-catalog")["stringData"].update(
        url="postgresql://factory:x@factory-postgress:5432/factory"),
    "ray-version": lambda m: next(d for d in m["raycluster.yaml"] if d["kind"] == "RayCluster")["spec"].update(
        rayVersion="2.59.0"),
    "old-api-version": lambda m: next(d for d in m["rayjob.yaml"] if d["kind"] == "RayJob").update(
        apiVersion="ray.io/v1alpha1"),
    "proxy-callback-missing-on-workers": lambda m: _container(m, "rayjob.yaml", "worker").update(
        env=_without(_container(m, "rayjob.yaml", "worker")["env"], PROXY_CALLBACK[0])),
    "home-not-on-s3": lambda m: next(d for d in m["config.yaml"] if d["kind"] == "ConfigMap")["data"].update(
        FACTORY_HOME="/data/store"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_typo_or_a_missing_variable_fails_the_check(manifests, mutation):
    """Each plausible slip in a manifest is reported, naming the file and what to fix."""
    broken = copy.deepcopy(manifests)
    MUTATIONS[mutation](broken)
    found = problems(broken, ray.__version__)
    assert found, f"the check missed {mutation}"
    assert all(".yaml" in p for p in found)


def test_the_image_is_built_on_the_installed_ray():
    """The image every pod runs starts from Ray's image at the installed version (mixed versions do not connect)."""
    base = re.search(r"^FROM\s+(\S+)", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    assert base.startswith(f"rayproject/ray:{ray.__version__}-")


def test_ray_up_starts_every_node_with_the_store_settings():
    """The `ray up` config mounts the settings file on every node and sources it before Ray starts there."""
    config = yaml.safe_load((CLUSTER / "ray-up.yaml").read_text())
    mounted = [target for target in config["file_mounts"] if target.endswith("factory.env")]
    assert mounted, "no factory.env in file_mounts"
    assert set(config["available_node_types"]) == {config["head_node_type"], "cpu"}
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        assert f". {mounted[0]}" in start
        assert all(f'test -n "${v}"' in start for v in REQUIRED)
    example = (CLUSTER / "factory.env.example").read_text()
    assert all(re.search(rf"^{v}=\S+", example, re.M) for v in REQUIRED)
    variable, wanted = PROXY_CALLBACK
    assert re.search(rf"^{variable}={re.escape(wanted)}$", example, re.M), f"{variable} is not set in factory.env"
    assert config["docker"]["image"]


def test_the_runtime_env_ships_the_package_and_no_secrets():
    """The runtime_env uploads the working tree (the factory package) and carries no credentials or catalog URL."""
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and ".venv" in env["excludes"] and ".git" in env["excludes"]
    assert "factory" not in env["excludes"]
    assert not {k for k in env.get("env_vars", {}) if k.startswith(("AWS_", "FACTORY_CATALOG"))}
