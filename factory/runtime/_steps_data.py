"""The data steps: ``ingest`` (a file or a generated table stored as a dataset version), ``sample``
(a deterministic sample of a dataset version) and ``features`` (a point-in-time training set)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError
from factory.runtime._sample import sample_dataset
from factory.runtime._task import import_function

if TYPE_CHECKING:
    from factory.runtime._task import StepContext
    from factory.store import Store

__all__ = ["ingest", "sample", "features"]


def ingest(ctx: StepContext) -> dict[str, str]:
    """Store the input ``source`` (an external file) or the table ``generate`` returns as a version."""
    config = ctx.config
    if config.get("generate"):
        table = import_function(config["generate"], f"step {ctx.step!r} generate")(**config.get("args", {}))
        return _store_version(ctx, table, [])
    digest = ctx.inputs["source"]
    path = _materialized(ctx.store, digest)
    try:
        return _store_version(ctx, path, [digest])
    finally:
        os.unlink(path)


def _materialized(store: Store, digest: str) -> str:
    """A local file holding the input's bytes (its stored copy, with the original suffix for the reader)."""
    artifact = store.artifacts.get(digest)
    meta = artifact.metadata or {}
    blob = meta.get("blob") or (digest if artifact.kind == "blob" else None)
    if blob is None:
        raise InvalidInputError(f"input 'source' {digest} holds no stored bytes: give it as file:PATH, which is "
                                "recorded and copied at submission")
    suffix = os.path.splitext(str(meta.get("uri") or artifact.name or ""))[1]
    fd, path = tempfile.mkstemp(prefix="factory-ingest-", suffix=suffix)
    with os.fdopen(fd, "wb") as out, store.blobs.open(blob) as reader:
        shutil.copyfileobj(reader, out)
    return path


def _store_version(ctx: StepContext, source: Any, parents: list[str]) -> dict[str, str]:
    config = ctx.config
    version = ctx.store.datasets.add(source, name=config["dataset"], key=tuple(config.get("key") or ()),
                                     parents=parents, allow_schema_change=bool(config.get("allow_schema_change")))
    ctx.log_metrics({"rows": version.num_rows})
    ctx.details.update(dataset=version.ref)
    return {"dataset": version.digest}


def sample(ctx: StepContext) -> dict[str, str]:
    """A deterministic sample of the input ``dataset``, stored as a version with it as parent."""
    config = ctx.config
    version = sample_dataset(ctx.store, ctx.inputs["dataset"], name=config.get("dataset"),
                             fraction=config.get("fraction"), rows=config.get("rows"), seed=int(config.get("seed", 0)))
    ctx.log_metrics({"rows": version.num_rows})
    ctx.details.update(dataset=version.ref)
    return {"dataset": version.digest}


def features(ctx: StepContext) -> dict[str, str]:
    """The input ``dataset`` joined point-in-time against the other inputs (feature views): a training set."""
    from factory.runtime._training_sets import point_in_time_set

    config = ctx.config
    inputs = ctx.inputs
    views = [digest for name, digest in sorted(inputs.items()) if name != "dataset"]
    made = point_in_time_set(ctx.store, inputs["dataset"], views, name=config["dataset"],
                             timestamp=config.get("timestamp", "event_timestamp"), key=config.get("key") or (),
                             holdout=config.get("holdout"), holdout_name=config.get("holdout_dataset"),
                             transform=config.get("transform"), transform_args=config.get("transform_args"),
                             allow_backfill=bool(config.get("allow_backfill")))
    ctx.log_metrics({"rows": made.dataset.num_rows, **({"holdout_rows": made.holdout.num_rows} if made.holdout else {})})
    ctx.details.update(dataset=made.dataset.ref, joined=made.joined)
    outputs = {"dataset": made.dataset.digest}
    if made.holdout is not None:
        ctx.details.update(holdout=made.holdout.ref)
        outputs["holdout"] = made.holdout.digest
    return outputs
