"""The lineage graph as OpenLineage RunEvents (spec 2-0-2), named the way lineage servers expect.

- Datasets are named by where they live: an artifact of the store has the store's
  location as its namespace (``file://<host><home>``, or ``s3://<bucket>`` with the
  home's prefix leading the name) and a readable name (``datasets/transactions``,
  ``models/fraud``); its digest is its version, in the dataset-version facet. An external
  file keeps its own location (``file://<host>`` and its path, ``s3://<bucket>`` and its key).
- Runs: each run from ``store.runs`` is one OpenLineage run (its inputs are the run's
  parents, its outputs the run's outputs); every other production of an artifact from
  parents (a dataset ingested from a file, a config made from a dataset) is a run of the
  job ``<kind>/<name>``. Each run has a START event and, once finished, a terminal one.
- The producer is the package's own URL from its metadata, else its PyPI page.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from factory._version import __version__
from factory.store._digest import sha256_digest
from factory.store.kinds import ArtifactKind

if TYPE_CHECKING:
    from factory.store.artifacts import Artifact, ArtifactStore

__all__ = ["openlineage_events", "producer_uri"]

_RUN_NAMESPACE = uuid.UUID("6f1d3c9e-2d0b-4f7a-9a51-3c2b8e1f0a77")
_FOLDERS = {ArtifactKind.EMBEDDING_COLLECTION: "embeddings", ArtifactKind.EXTERNAL: "external"}
_TERMINAL = {"succeeded": "COMPLETE", "failed": "FAIL", "cancelled": "ABORT"}


@functools.cache
def producer_uri() -> str:
    """The package's URL from its installed metadata, else its page on PyPI."""
    from importlib import metadata

    try:
        meta = metadata.metadata("factory")
    except metadata.PackageNotFoundError:
        meta = None
    if meta is not None:
        for entry in meta.get_all("Project-URL") or []:
            url = entry.partition(",")[2].strip()
            if url.startswith("https://"):
                return url
        if (meta.get("Home-page") or "").startswith("https://"):
            return meta["Home-page"]
    return f"https://pypi.org/project/factory/{__version__}/"


def _split(uri: str) -> tuple[str, str]:
    """(namespace, path) of a location URI: ``s3://bucket/key`` -> (``s3://bucket``, ``key``)."""
    parts = urlparse(uri)
    return f"{parts.scheme}://{parts.netloc}", parts.path


class _Namer:
    """OpenLineage dataset identities for artifacts of one store."""

    def __init__(self, location: str):
        parts = urlparse(location)
        if parts.scheme == "file":
            self.namespace, self.prefix = location.rstrip("/"), ""
        else:
            self.namespace, self.prefix = _split(location)
            self.prefix = self.prefix.strip("/")

    def __call__(self, art: Artifact) -> tuple[str, str]:
        if art.kind == ArtifactKind.EXTERNAL and "uri" in art.metadata:
            namespace, path = _split(art.metadata["uri"])
            return namespace, path if namespace.startswith("file://") else path.lstrip("/")
        folder = _FOLDERS.get(art.kind, f"{art.kind}s")
        name = f"{folder}/{art.name or art.digest[7:19]}"
        return self.namespace, f"{self.prefix}/{name}" if self.prefix else name


def openlineage_events(artifacts: ArtifactStore, chain: list[str], *, location: str) -> list[dict[str, Any]]:
    """RunEvents for every production among ``chain`` (digests), oldest first."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import job_type_job
    from openlineage.client.serde import Serde

    namer = _Namer(location)
    known: dict[str, Artifact] = {}

    def load(digest: str) -> Artifact:
        if digest not in known:
            known[digest] = artifacts.get(digest)
        return known[digest]

    def event(state: str, at: str, run_id: str, job: tuple[str, str], inputs: list[str], outputs: list[str],
              order: int) -> tuple[str, int, dict[str, Any]]:
        facets = {"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="FACTORY",
                                                          jobType=job[0])}
        built = RunEvent(
            eventType=getattr(RunState, state),
            eventTime=at,
            producer=producer_uri(),
            run=Run(runId=run_id),
            job=Job(namespace=namer.namespace, name=f"{job[0]}/{job[1]}", facets=facets),
            inputs=[_dataset(load(d), namer, output=False) for d in inputs],
            outputs=[_dataset(load(d), namer, output=True) for d in outputs],
        )
        return at, order, Serde.to_dict(built)

    events = []
    for digest in chain:
        art = load(digest)
        if art.kind == ArtifactKind.RUN:
            events += _run_events(artifacts, art, event)
            continue
        for production in artifacts.productions(digest):
            inputs = [p for p in production.parents if load(p).kind != ArtifactKind.RUN]
            if not inputs:
                continue  # made by a run: that run's events name it as an output
            run_id = str(uuid.uuid5(_RUN_NAMESPACE, sha256_digest(production.to_json())))
            at = production.created_at.isoformat()
            job = (str(art.kind), art.name or art.digest[7:19])
            events.append(event("START", at, run_id, job, inputs, [], 0))
            events.append(event("COMPLETE", at, run_id, job, inputs, [digest], 1))
    return [e for _, _, e in sorted(events, key=lambda t: (datetime.fromisoformat(t[0]), t[1]))]


def _run_events(artifacts: ArtifactStore, art: Artifact, event: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """START, and a terminal event once finished, for a run recorded by ``store.runs``."""
    run_id = str(uuid.uuid5(_RUN_NAMESPACE, art.digest))
    record = artifacts.catalog.run(art.metadata.get("run_id", ""))
    kind = record.kind if record else str(art.metadata.get("run_kind", "run"))
    job = (kind, record.name or record.id if record else art.name or art.digest[7:19])
    started = record.started_at if record else art.created_at.isoformat()
    out = [event("START", started, run_id, job, list(art.parents), [], 0)]
    if record is not None and record.state in _TERMINAL:
        outputs = list(dict.fromkeys(artifacts.catalog.run_outputs(record.id).values()))
        out.append(event(_TERMINAL[record.state], record.updated_at, run_id, job, list(art.parents), outputs, 1))
    return out


def _dataset(art: Artifact, namer: _Namer, *, output: bool) -> Any:
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset

    namespace, name = namer(art)
    facets = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=art.digest)}
    cls = OutputDataset if output else InputDataset
    return cls(namespace=namespace, name=name, facets=facets)
