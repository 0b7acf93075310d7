"""Lineage: walking parent links both ways and exporting OpenLineage events."""

from __future__ import annotations

import uuid

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent


def _diamond(store):
    raw = store.put_blob(b"raw", name="raw.csv").digest
    left = store.artifacts.add("dataset", metadata={"side": "l"}, parents=[raw], name="left").digest
    right = store.artifacts.add("dataset", metadata={"side": "r"}, parents=[raw], name="right").digest
    model = store.artifacts.add("model", metadata={"m": 1}, parents=[left, right], name="model").digest
    return raw, left, right, model


def test_ancestors_and_descendants(store):
    """'Where did this come from' and 'what depends on this' follow parent links transitively."""
    raw, left, right, model = _diamond(store)
    assert store.lineage.ancestors(model) == {raw, left, right}
    assert store.lineage.descendants(raw) == {left, right, model}
    assert store.lineage.parents(model) == sorted([left, right])


def test_tree_marks_repeated_nodes_instead_of_expanding_twice(store):
    """In a diamond the shared ancestor is expanded once and marked the second time."""
    raw, left, right, model = _diamond(store)
    tree = store.lineage.upstream(model)
    assert {n.artifact.digest for n in tree.neighbours} == {left, right}
    raws = [n for side in tree.neighbours for n in side.neighbours]
    assert [n.artifact.digest for n in raws] == [raw, raw]
    assert sorted(n.seen for n in raws) == [False, True]
    assert store.lineage.upstream(model, depth=1).neighbours[0].neighbours == ()


def _rebuild(e):
    """Rebuild an exported event through the client's attrs classes, which runs its validators."""
    RunEvent(
        eventTime=e["eventTime"],
        producer=e["producer"],
        run=Run(runId=e["run"]["runId"]),
        job=Job(namespace=e["job"]["namespace"], name=e["job"]["name"]),
        eventType=e["eventType"],
        inputs=[InputDataset(namespace=i["namespace"], name=i["name"]) for i in e["inputs"]],
        outputs=[OutputDataset(namespace=o["namespace"], name=o["name"]) for o in e["outputs"]],
    )
    uuid.UUID(e["run"]["runId"])


def test_openlineage_events_parse_with_the_client_classes(store):
    """Each derived artifact is a job run with a START and a COMPLETE event (spec 2-0-2) the client accepts."""
    raw, left, right, model = _diamond(store)
    events = store.lineage.openlineage_events(model)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"] * 3
    for e in events:
        assert e["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/")
        _rebuild(e)
    last = events[-1]
    assert last["job"]["name"] == "model/model"
    assert last["outputs"][0]["name"] == "models/model"
    assert last["outputs"][0]["facets"]["version"]["datasetVersion"] == model
    assert sorted(i["name"] for i in last["inputs"]) == ["datasets/left", "datasets/right"]
    assert {i["namespace"] for i in last["inputs"]} == {store.location}


def test_a_dataset_added_from_a_file_starts_its_lineage_at_the_file(store, tmp_path):
    """The ingest is a job run whose input is the file (by its own location) and whose output is the version."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from factory.runtime._cli_common import record_source

    path = tmp_path / "transactions.csv"
    pacsv.write_csv(pa.table({"id": [1, 2], "amount": [3.5, 4.0]}), path)
    version = store.datasets.add(path, name="transactions", key=["id"])
    record_source(store, version.digest, path)
    (source,) = store.lineage.parents(version.digest)
    assert store.artifacts.get(source).kind == "external"
    start, complete = store.lineage.openlineage_events(version.digest)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert complete["job"]["name"] == "dataset/transactions"
    (file_in,) = complete["inputs"]
    assert file_in["namespace"].startswith("file://") and file_in["name"] == str(path)
    (out,) = complete["outputs"]
    assert out["namespace"] == store.location and out["name"] == "datasets/transactions"
    assert out["facets"]["version"]["datasetVersion"] == version.digest


def test_a_run_is_one_openlineage_run_with_its_inputs_outputs_and_end(store):
    """A run from store.runs exports START and its terminal state, inputs its parents, outputs its outputs."""
    data = store.put_blob(b"rows", name="rows.csv").digest
    run = store.runs.start("training", config={"lr": 0.1}, parents=[data], name="fraud")
    ckpt = store.blobs.put(b"weights")
    run.output("model", ckpt)
    assert [e["eventType"] for e in store.lineage.openlineage_events(ckpt)] == ["START"]
    run.finish("failed", error="diverged")
    events = store.lineage.openlineage_events(ckpt)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert {e["run"]["runId"] for e in events} == {events[0]["run"]["runId"]}
    assert events[0]["job"]["name"] == "training/fraud"
    assert [i["name"] for i in events[1]["inputs"]] == ["blobs/rows.csv"]
    assert [o["facets"]["version"]["datasetVersion"] for o in events[1]["outputs"]] == [ckpt]
    for e in events:
        _rebuild(e)


def test_the_producer_is_the_package_not_an_invented_address(store):
    """Events name a producer URI that exists: the package's URL, else its PyPI page."""
    raw, left, right, model = _diamond(store)
    producer = store.lineage.openlineage_events(left)[0]["producer"]
    assert producer.startswith("https://") and "github.com/factory-ai" not in producer
