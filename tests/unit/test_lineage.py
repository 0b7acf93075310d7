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


def test_openlineage_events_parse_with_the_client_classes(store):
    """Each derived artifact becomes a COMPLETE RunEvent (spec 2-0-2) the client accepts."""
    raw, left, right, model = _diamond(store)
    events = store.lineage.openlineage_events(model)
    assert len(events) == 3
    for e in events:
        assert e["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/")
        assert e["eventType"] == "COMPLETE"
        # Rebuilding through the client's attrs classes runs its validators.
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
    last = events[-1]
    assert last["outputs"][0]["name"] == model
    assert sorted(i["name"] for i in last["inputs"]) == sorted([left, right])
