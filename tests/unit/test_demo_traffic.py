"""The demo's traffic seam: a rollout's traffic configs become the deployment record every replica follows."""

from __future__ import annotations

from factory_kit import MODEL, history

from factory.runtime._demo_traffic import StoreTraffic
from factory.serve import TrafficConfig, read_record


def test_each_config_becomes_the_records_split_and_an_older_one_changes_nothing(tmp_path):
    """Weights reach the record with the candidate's package held; a stale generation is ignored."""
    from factory.serve._record import DeploymentRecord, write_record

    h = history(tmp_path, models=2)
    incumbent, candidate = h.models
    write_record(h.store, DeploymentRecord(name=MODEL, model=MODEL, env="prod"), expected=None, reason="test")
    traffic = StoreTraffic(h.store, MODEL, [incumbent])
    traffic.add(candidate)
    inc, cand = incumbent[7:19], candidate[7:19]
    traffic.apply(TrafficConfig(model=MODEL, generation=2, weights={inc: 75.0, cand: 25.0}, shadows={cand: 50.0}))
    record = read_record(h.store, MODEL)[0]
    assert record.traffic.weights == {inc: 75.0, cand: 25.0} and candidate in record.versions
    assert traffic.current(MODEL).shadows == {cand: 50.0}
    traffic.apply(TrafficConfig(model=MODEL, generation=1, weights={inc: 100.0, cand: 0.0}))
    assert read_record(h.store, MODEL)[0].traffic.weights == {inc: 75.0, cand: 25.0}
    traffic.apply(TrafficConfig(model=MODEL, generation=3, weights={inc: 100.0, cand: 0.0}))
    assert read_record(h.store, MODEL)[0].traffic.weights == {inc: 100.0}
    assert [c.generation for _, c in traffic.applied] == [2, 3]
