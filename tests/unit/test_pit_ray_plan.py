"""The Ray join's shuffle layout and kernel, without Ray: partitions joined one by one give the local join."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from factory.errors import InvalidInputError
from factory.store._canonical import canonical_digest
from factory.store.features import _pit
from factory.store.features._pit_ray import Plan


def ts(seconds):
    return pa.array(np.asarray(seconds, dtype=np.int64) * 10**6).cast(pa.timestamp("us", tz="UTC"))


SPEC = _pit.PitSpec("v", ("user",), "ts", "created", timedelta(seconds=300), ("x", "ts_copy"))


def view_rows(rng, n=3000, users=200):
    event = rng.integers(0, 2000, n)
    return pa.table({"user": pa.array(rng.integers(0, users, n), pa.int32()), "ts": ts(event),
                     "created": ts(event + np.where(rng.random(n) < 0.3, rng.integers(1, 100, n), 0)),
                     "x": pa.array(rng.random(n), mask=rng.random(n) < 0.1), "ts_copy": ts(event)})


def entity_rows(rng, n=2000, users=220):
    """Entity rows with columns named like the view's (ts, created): the shuffle must keep them apart."""
    return pa.table({"user": rng.integers(0, users, n), "event_timestamp": ts(rng.integers(0, 2300, n)),
                     "ts": pa.array([f"label-{i}" for i in range(n)]), "created": rng.integers(0, 9, n)})


def shuffled_join(plan, rows, features, partitions, **options):
    """What the cluster does: tag both sides, split by partition, run the kernel on each partition."""
    both = pa.concat_tables([plan.tag(rows, side=1, partitions=partitions),
                             plan.tag(features, side=0, partitions=partitions)])
    parts = [both.filter(pc.equal(both.column("__part"), p)) for p in range(partitions)]
    parts.append(pa.table({}))  # an empty block without columns, as Ray can hand over
    return pa.concat_tables([plan.kernel(part, **options) for part in parts])


@pytest.mark.parametrize("allow_backfill", [False, True])
def test_partitions_joined_one_by_one_equal_the_local_join(allow_backfill):
    """Every entity row comes out once with the local join's features, its own columns unchanged."""
    rng = np.random.default_rng(7)
    features, rows = view_rows(rng), entity_rows(rng)
    plan = Plan.make(SPEC, rows.schema, features.schema, timestamp="event_timestamp", assume_utc=False,
                     names={"x": "x_out"})
    got = shuffled_join(plan, rows, features, 5, allow_backfill=allow_backfill, assume_utc=False)
    local = _pit.join(rows, features, SPEC, allow_backfill=allow_backfill)
    expected = rows.append_column("x_out", local.column("x")).append_column("ts_copy", local.column("ts_copy"))
    assert got.schema == plan.output == expected.schema
    assert canonical_digest(got) == canonical_digest(expected)
    assert got.column("x_out").null_count < rows.num_rows


def test_bad_input_is_refused_before_anything_runs():
    """Missing columns, a key of another kind, naive times or a clash of names: errors from the plan."""
    rng = np.random.default_rng(1)
    features, rows = view_rows(rng, 10), entity_rows(rng, 10)
    make = lambda r, f=features, **kw: Plan.make(SPEC, r.schema, f.schema, timestamp="event_timestamp",
                                                 assume_utc=False, **kw)
    with pytest.raises(InvalidInputError, match="no column 'event_timestamp'"):
        make(rows.drop_columns(["event_timestamp"]))
    with pytest.raises(InvalidInputError, match="entity column 'user' is string .* but int32"):
        make(rows.set_column(0, "user", pa.array(["u"] * 10)))
    with pytest.raises(InvalidInputError, match="timezone-naive .*assume_utc=True"):
        make(rows.set_column(1, "event_timestamp", rows.column(1).cast(pa.timestamp("us"))))
    with pytest.raises(InvalidInputError, match="already have column.*x"):
        make(rows.append_column("x", pa.array([1.0] * 10)))
    with pytest.raises(InvalidInputError, match="no column.*x"):
        make(rows, features.drop_columns(["x"]))
