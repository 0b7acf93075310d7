"""``trace``: from one logged prediction to everything behind it.

A request id leads to its rows in a model's inference log (``inference-<model>``, looked
up through the log's BTREE index on ``request_id``), hence to the package that answered;
from there the lineage graph gives the gate results and their attestations (checked
against the transparency log), the training run with its config, code and environment,
the training set, the feature view versions it was joined from and the source dataset
versions under them.

Serving appends to the log without indexing it; the first trace on a log with no index
builds it (``FeatureLog.optimize``, which later traces keep current the same way when
many rows arrived unindexed), so a lookup stays an index probe on a log of millions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from factory.errors import NotFoundError

__all__ = ["Trace", "trace", "inference_logs", "ensure_index"]

log = logging.getLogger(__name__)

_UNINDEXED_LIMIT = 100_000  # rows appended since the index was built, above which a trace updates it


@dataclass(frozen=True)
class Trace:
    """Everything behind one logged prediction (see the module)."""

    request_id: str
    log: str
    rows: list[dict[str, Any]]
    model: dict[str, Any]
    gates: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    code: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    training_set: dict[str, Any] | None = None
    feature_views: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def inference_logs(store) -> list[str]:
    """The inference logs of every model deployed from ``store`` (``inference-<model>``)."""
    from factory.serve import read_record

    names: list[str] = []
    for ref in store.refs.list("deployment/"):
        found = read_record(store, ref.name.removeprefix("deployment/"))
        if found is not None and f"inference-{found[0].model}" not in names:
            names.append(f"inference-{found[0].model}")
    return names


def ensure_index(feature_log) -> None:
    """Index the log's ``request_id`` when it has no index, or when many rows arrived since it was built."""
    import lance

    try:
        ds = lance.dataset(feature_log.uri, storage_options=feature_log.store.storage_options)
    except (OSError, ValueError):
        return
    indexed = [i for i in ds.list_indices() if i.get("fields") == ["request_id"]]
    if indexed:
        try:
            stats = ds.stats.index_stats(indexed[0]["name"])
            if stats.get("num_unindexed_rows", 0) <= _UNINDEXED_LIMIT:
                return
        except Exception:  # an older Lance without index stats: the index is there, use it
            return
    try:
        feature_log.optimize()
    except Exception as exc:  # another optimiser won the race: the lookup still works, by a scan
        log.info("could not index %s now: %s", feature_log.name, exc)


def _row(table, i: int) -> dict[str, Any]:
    out = {}
    for name in table.column_names:
        value = table[name][i].as_py()
        out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def _lookup(flog, request_id: str):
    """The log's rows for ``request_id``, through its index (built or brought up to date first)."""
    ensure_index(flog)
    return flog.find(request_id)


def _scan(flog, request_id: str):
    """The same rows by a scan of the whole log (the benchmark's peer)."""
    import lance

    ds = lance.dataset(flog.uri, storage_options=flog.store.storage_options)
    return ds.to_table(filter="request_id = '" + request_id.replace("'", "''") + "'", use_scalar_index=False)


def _find(store, request_id: str, model: str | None) -> tuple[str, Any]:
    from factory.store.features import FeatureLog

    names = [f"inference-{model}"] if model else inference_logs(store)
    if not names:
        raise NotFoundError("no model is deployed from this store, so no inference log exists: deploy one with "
                            "'factory serve deploy DIGEST --env ENV', or name the model with --model")
    for name in names:
        flog = FeatureLog(store, name)
        try:
            rows = _lookup(flog, request_id)
        except NotFoundError:
            continue
        if rows.num_rows:
            return name, rows
    raise NotFoundError(f"request {request_id!r} is in none of the inference logs {names}: only a sampled share of "
                        "requests is logged (the contract's observability.sample_rate), and rows reach the log "
                        "within seconds of the request")


def _brief(art) -> dict[str, Any]:
    return {"digest": art.digest, "kind": str(art.kind), "name": art.name, "created_at": art.created_at.isoformat()}


def trace(store, request_id: str, *, model: str | None = None) -> Trace:
    """Everything behind the logged request ``request_id`` (``model``: search only that model's log)."""
    from factory.gates import latest_results

    log_name, rows = _find(store, request_id, model)
    table_rows = [_row(rows, i) for i in range(rows.num_rows)]
    digest = table_rows[0]["model"]
    package = store.artifacts.get(digest)
    model_info = {**_brief(package), "version": table_rows[0].get("version"),
                  "metrics": package.metadata.get("metrics"), "task": package.metadata.get("task"),
                  "architecture": package.metadata.get("architecture")}
    newest, overrides = latest_results(store, digest)
    gates = [{"policy": e.policy, "verdict": e.verdict, "attestation": e.digest, "log_index": e.index,
              "predicate_type": e.predicate_type, "verified": e.attestation is not None, "problem": e.problem}
             for e in newest]
    gates += [{"policy": e.policy, "verdict": "override", "attestation": e.digest, "log_index": e.index,
               "predicate_type": e.predicate_type, "verified": e.attestation is not None, "problem": e.problem}
              for e in overrides]
    parents = {}
    for p in package.parents:
        try:
            art = store.artifacts.get(p)
        except NotFoundError:
            continue
        parents.setdefault(str(art.kind), art)
    result: dict[str, Any] = {}
    run_art = parents.get("run")
    if run_art is not None:
        run_id = run_art.metadata.get("run_id")
        info = _brief(run_art) | {"run_id": run_id, "run_kind": run_art.metadata.get("run_kind")}
        if run_id:
            try:
                run = store.runs.get(run_id)
                info |= {"state": run.state, "started_at": run.started_at.isoformat(), "key": run.key}
            except NotFoundError:
                pass
        result["run"] = info
    if "training-config" in parents:
        cfg = parents["training-config"]
        result["config"] = _brief(cfg) | {k: cfg.metadata.get(k) for k in
                                          ("architecture", "hyperparameters", "compute", "epochs", "seed",
                                           "features", "label")}
    if "code" in parents:
        code = parents["code"]
        result["code"] = _brief(code) | {"commit": code.metadata.get("commit"),
                                         "changes": code.metadata.get("changes")}
    if "environment" in parents:
        env = parents["environment"]
        dists = env.metadata.get("distributions") or {}
        result["environment"] = _brief(env) | {"python": env.metadata.get("python"), "distributions": len(dists)}
    dataset = parents.get("dataset")
    views: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    if dataset is not None:
        result["training_set"] = _brief(dataset) | {"rows": dataset.metadata.get("num_rows")}
        seen: set[str] = set()
        frontier = [dataset]
        while frontier:
            art = frontier.pop()
            for p in art.parents:
                if p in seen:
                    continue
                seen.add(p)
                try:
                    parent = store.artifacts.get(p)
                except NotFoundError:
                    continue
                if parent.kind == "feature-view":
                    views.append(_brief(parent) | {"source": parent.metadata.get("source")})
                    frontier.append(parent)
                elif parent.kind == "dataset":
                    grand = [store.artifacts.get(g).kind for g in parent.parents if _exists(store, g)]
                    if not any(k in ("dataset", "feature-view") for k in grand):
                        sources.append(_brief(parent) | {"rows": parent.metadata.get("num_rows")})
                    frontier.append(parent)
    return Trace(request_id, log_name, table_rows, model_info, gates, result.get("run"), result.get("config"),
                 result.get("code"), result.get("environment"), result.get("training_set"), views,
                 sorted(sources, key=lambda s: s["name"] or ""))


def _exists(store, digest: str) -> bool:
    try:
        store.artifacts.get(digest)
    except NotFoundError:
        return False
    return True
