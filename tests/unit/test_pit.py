"""The point-in-time join engine against a plain per-row reference of the documented rule."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import InvalidInputError
from factory.store._keysort import argsort_keys
from factory.store.features._pit import PitSpec, Steps, content_rank, join, search_steps

UTC_US = pa.timestamp("us", tz="UTC")
SPEC = PitSpec("v", ("e",), "ts", "cr", timedelta(seconds=10), ("x", "y"))


def ts(seconds, unit="us", tz="UTC"):
    """Whole seconds as a timestamp array (None stays null)."""
    scale = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[unit]
    return pa.array([None if s is None else int(s) * scale for s in seconds], pa.int64()).cast(pa.timestamp(unit, tz=tz))


def reference(entity_rows: pa.Table, features: pa.Table, spec: PitSpec, timestamp: str, allow_backfill: bool):
    """The rule of ``_pit``'s docstring, one entity row and one feature row at a time."""
    feats = features.to_pylist()
    rank = content_rank(features, np.arange(features.num_rows)) if feats else []
    out = []
    for q in entity_rows.to_pylist():
        t = q[timestamp]
        best, winner = None, None
        for i, r in enumerate(feats):
            if any(r[k] is None or q[k] is None or r[k] != q[k] for k in spec.entities):
                continue
            e = r[spec.timestamp]
            if e is None or e > t or e < t - spec.ttl:
                continue
            c = r.get(spec.created_timestamp) if spec.created_timestamp else None
            c = e if c is None else c
            if not allow_backfill and c > t:
                continue
            if best is None or (e, c, rank[i]) > best:
                best, winner = (e, c, rank[i]), r
        out.append({f: (winner[f] if winner else None) for f in spec.features})
    return out


def random_case(rng, n_features, n_rows, n_entities, span):
    """Feature rows with ties, late and null created times and null values; entity rows with repeats."""
    entity = rng.integers(0, n_entities, n_features)
    event = rng.integers(0, span, n_features)
    late = rng.random(n_features) < 0.3
    created = [None if rng.random() < 0.1 else int(e + (rng.integers(1, 20) if lt else 0)) for e, lt in zip(event, late)]
    features = pa.table({
        "e": entity,
        "ts": ts(event),
        "cr": ts(created),
        "x": rng.integers(0, 3, n_features).astype(np.float64),
        "y": pa.array(rng.integers(0, 5, n_features), mask=rng.random(n_features) < 0.15),
    })
    rows = pa.table({"e": rng.integers(0, n_entities + 2, n_rows), "event_timestamp": ts(rng.integers(-5, span + 25, n_rows))})
    return features, rows


@pytest.mark.parametrize("allow_backfill", [False, True])
def test_matches_reference_on_random_data(allow_backfill):
    """Ties, TTL edges, late and null created times, repeated entity rows: equal to the reference."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        features, rows = random_case(rng, int(rng.integers(0, 60)), 40, int(rng.integers(1, 6)), int(rng.integers(1, 60)))
        spec = PitSpec("v", ("e",), "ts", "cr", timedelta(seconds=int(rng.integers(1, 30))), ("x", "y"))
        got = join(rows, features, spec, allow_backfill=allow_backfill).to_pylist()
        assert got == reference(rows, features, spec, "event_timestamp", allow_backfill)


def test_ttl_bound_is_inclusive():
    """A value exactly TTL old is served; one microsecond older is not."""
    features = pa.table({"e": [1], "ts": ts([100]), "cr": ts([None]), "x": [1.0], "y": [1]})
    at = pa.array([110 * 10**6, 110 * 10**6 + 1], pa.int64()).cast(UTC_US)
    rows = pa.table({"e": [1, 1], "event_timestamp": at})
    assert join(rows, features, SPEC).column("x").to_pylist() == [1.0, None]


def test_value_created_after_the_row_is_hidden_unless_backfill_is_allowed():
    """A backfilled row (created later than the entity row's time) never leaks by default."""
    features = pa.table({"e": [1, 1], "ts": ts([0, 5]), "cr": ts([0, 50]), "x": [1.0, 2.0], "y": [1, 2]})
    rows = pa.table({"e": [1, 1], "event_timestamp": ts([8, 60])})
    spec = PitSpec("v", ("e",), "ts", "cr", timedelta(days=1), ("x", "y"))
    assert join(rows, features, spec).column("x").to_pylist() == [1.0, 2.0]
    assert join(rows, features, spec, allow_backfill=True).column("x").to_pylist() == [2.0, 2.0]


def test_tie_on_event_time_goes_to_the_latest_created_then_to_content():
    """Equal event times: the latest created wins; equal created too: the same row whatever the row order."""
    features = pa.table({
        "e": [1, 1, 1, 2, 2], "ts": ts([5, 5, 5, 5, 5]), "cr": ts([6, 9, 7, 6, 6]),
        "x": [1.0, 2.0, 3.0, 8.0, 4.0], "y": [1, 2, 3, 4, 5],
    })
    rows = pa.table({"e": [1, 2], "event_timestamp": ts([9, 9])})
    expected = join(rows, features, SPEC).column("x").to_pylist()
    assert expected == [2.0, 8.0]
    for seed in range(5):
        shuffled = features.take(np.random.default_rng(seed).permutation(features.num_rows))
        assert join(rows, shuffled, SPEC).column("x").to_pylist() == expected


def test_a_later_null_value_wins_over_an_older_value():
    """Nulls are values: the latest row decides, even when its feature is null."""
    features = pa.table({"e": [1, 1], "ts": ts([1, 2]), "cr": ts([None, None]), "x": [1.0, None], "y": [1, 2]})
    rows = pa.table({"e": [1], "event_timestamp": ts([3])})
    assert join(rows, features, SPEC).to_pylist() == [{"x": None, "y": 2}]


def test_every_input_row_comes_back_once_in_order():
    """Duplicated and unknown entity rows keep their positions; null keys get nulls."""
    features = pa.table({"e": [1, 2], "ts": ts([1, 1]), "cr": ts([None, None]), "x": [1.0, 2.0], "y": [1, 2]})
    rows = pa.table({"e": pa.array([2, 1, 2, 9, None, 2]), "event_timestamp": ts([5, 5, 5, 5, 5, 0])})
    assert join(rows, features, SPEC).column("x").to_pylist() == [2.0, 1.0, 2.0, None, None, None]


def test_composite_string_keys_and_mixed_integer_widths():
    """Two key columns, strings, and int32 against int64 all match by value."""
    features = pa.table({
        "a": pa.array(["u", "u", "v"]), "b": pa.array([1, 2, 1], pa.int32()), "ts": ts([1, 1, 1]), "x": [1.0, 2.0, 3.0],
    })
    rows = pa.table({"a": pa.array(["u", "v", "u"], pa.large_string()), "b": pa.array([2, 1, 3], pa.int64()),
                     "event_timestamp": ts([2, 2, 2])})
    spec = PitSpec("v", ("a", "b"), "ts", None, timedelta(hours=1), ("x",))
    assert join(rows, features, spec).column("x").to_pylist() == [2.0, 3.0, None]


def test_units_are_compared_at_the_finest_resolution():
    """Nanosecond entity times against microsecond events: no rounding lets a future event in."""
    features = pa.table({"e": [1], "ts": pa.array([1_000_001], pa.int64()).cast(UTC_US), "x": [1.0]})
    at = pa.array([1_000_000_999, 1_000_001_000], pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    rows = pa.table({"e": [1, 1], "event_timestamp": at})
    spec = PitSpec("v", ("e",), "ts", None, timedelta(seconds=1), ("x",))
    assert join(rows, features, spec).column("x").to_pylist() == [None, 1.0]


def test_missing_timestamp_column_is_a_clear_error():
    """Entity rows without the time column name the column and the fix."""
    features = pa.table({"e": [1], "ts": ts([1]), "cr": ts([1]), "x": [1.0], "y": [1]})
    with pytest.raises(InvalidInputError, match="'event_timestamp'.*timestamp="):
        join(pa.table({"e": [1], "when": ts([1])}), features, SPEC)


def test_naive_mixed_with_aware_timestamps_is_a_clear_error():
    """A naive entity time against aware feature times names both columns."""
    features = pa.table({"e": [1], "ts": ts([1]), "cr": ts([1]), "x": [1.0], "y": [1]})
    rows = pa.table({"e": [1], "event_timestamp": ts([1], tz=None)})
    with pytest.raises(InvalidInputError, match="naive.*'event_timestamp'.*aware.*'ts'"):
        join(rows, features, SPEC)


def test_all_naive_timestamps_need_assume_utc():
    """Naive times everywhere are refused, unless the caller says they are UTC."""
    features = pa.table({"e": [1], "ts": ts([1], tz=None), "x": [1.0]})
    rows = pa.table({"e": [1], "event_timestamp": ts([2], tz=None)})
    spec = PitSpec("v", ("e",), "ts", None, timedelta(seconds=5), ("x",))
    with pytest.raises(InvalidInputError, match="assume_utc=True"):
        join(rows, features, spec)
    assert join(rows, features, spec, assume_utc=True).column("x").to_pylist() == [1.0]


def test_entity_column_of_the_wrong_type_is_a_clear_error():
    """String entity rows against integer feature keys name the column and both types."""
    features = pa.table({"e": [1], "ts": ts([1]), "cr": ts([1]), "x": [1.0], "y": [1]})
    rows = pa.table({"e": ["1"], "event_timestamp": ts([2])})
    with pytest.raises(InvalidInputError, match="entity column 'e' is string .* but int64"):
        join(rows, features, SPEC)


def test_non_timestamp_and_null_times_are_clear_errors():
    """An integer time column and a null entity-row time are refused with a fix."""
    features = pa.table({"e": [1], "ts": ts([1]), "cr": ts([1]), "x": [1.0], "y": [1]})
    with pytest.raises(InvalidInputError, match="not a timestamp"):
        join(pa.table({"e": [1], "event_timestamp": [5]}), features, SPEC)
    with pytest.raises(InvalidInputError, match="null 'event_timestamp'"):
        join(pa.table({"e": [1], "event_timestamp": ts([None])}), features, SPEC)


keys = st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_argsort_keys_equals_lexsort(data):
    """Packed sorting, exact or by leading bits plus tie repair, is numpy's stable lexsort."""
    n = data.draw(st.integers(1, 200))
    spans = data.draw(st.lists(st.sampled_from([1, 3, 1000, 2**40, 2**62]), min_size=1, max_size=3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    cols = [rng.integers(-s, s, n) for s in spans]
    expected = np.lexsort((np.arange(n), *reversed(cols)))
    assert argsort_keys(cols).tolist() == expected.tolist()


def test_search_steps_past_64_bits():
    """Entity codes and times that need more than 64 bits still find the last step at or before."""
    rng = np.random.default_rng(3)
    code = np.sort(rng.integers(0, 2**40, 300))
    v = rng.integers(-(2**61), 2**61, 300)
    order = np.lexsort((v, code))
    code, v = code[order], v[order]
    steps = Steps(code, v, np.arange(300), v)
    q_code = np.concatenate([code, code, rng.integers(0, 2**40, 20)])
    q_at = np.concatenate([v, v - 1, rng.integers(-(2**61), 2**61, 20)])
    got = search_steps(steps, q_code, q_at)
    for i in range(len(q_code)):
        hits = np.flatnonzero((code == q_code[i]) & (v <= q_at[i]))
        assert got[i] == (hits[-1] if len(hits) else -1)


@pytest.mark.parametrize("id_range", [2**32 - 2, 2**63 - 1])
def test_matches_reference_when_keys_need_more_than_64_bits(id_range):
    """Wide entity ids (offset or dictionary coded) and microsecond times over decades: still the reference."""
    rng = np.random.default_rng(12)
    ids = rng.integers(-id_range // 2, id_range // 2, 40)
    n = 400
    event = rng.integers(0, 40 * 365 * 86_400 * 10**6, n)
    event[1::4] = event[0::4][: len(event[1::4])]
    created = event + np.where(rng.random(n) < 0.3, rng.integers(1, 10**12, n), 0)
    features = pa.table({"e": rng.choice(ids, n), "ts": pa.array(event).cast(UTC_US), "cr": pa.array(created).cast(UTC_US),
                         "x": rng.integers(0, 3, n).astype(float), "y": rng.integers(0, 3, n)})
    q_at = np.concatenate([event[:150], event[:50] - 1, rng.integers(0, 40 * 365 * 86_400 * 10**6, 100)])
    rows = pa.table({"e": rng.choice(ids, len(q_at)), "event_timestamp": pa.array(q_at).cast(UTC_US)})
    rows = rows.set_column(0, "e", pa.concat_arrays([features.column("e").combine_chunks()[:150],
                                                      features.column("e").combine_chunks()[:50],
                                                      rows.column("e").combine_chunks()[200:]]))
    spec = PitSpec("v", ("e",), "ts", "cr", timedelta(days=3000), ("x", "y"))
    for allow_backfill in (False, True):
        got = join(rows, features, spec, allow_backfill=allow_backfill).to_pylist()
        assert got == reference(rows, features, spec, "event_timestamp", allow_backfill)
