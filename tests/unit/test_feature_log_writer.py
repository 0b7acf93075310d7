"""The buffered feature-log writer: batched commits from many processes, no waiting, bounded memory, fast find."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import lance
import pytest

from factory.errors import InvalidInputError
from factory.store.features import FeatureLog

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(request_id, user=1, amount=1.0, prediction=0.5):
    return {"request_id": request_id, "model": "sha256:" + "a" * 64, "ts": T0, "user": user, "amount": amount,
            "prediction": prediction}


def wait_until(predicate, seconds=30.0):
    """Poll ``predicate`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


_WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime
    from factory.settings import Settings
    from factory.store import Store
    from factory.store.features import FeatureLog

    home, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store(home, settings=Settings(home=home))
    with FeatureLog(store).writer(flush_rows=100, flush_seconds=60, optimize_rows=None) as writer:
        for i in range(n):
            writer.write({"request_id": f"{me}-{i}", "model": "m", "ts": datetime.now(UTC), "user": i,
                          "amount": float(i), "prediction": 0.5})
    stats = writer.stats()
    assert stats.written == n and stats.dropped == 0, stats
""")


def test_many_processes_lose_no_rows_and_commit_in_batches(store):
    """Three serving processes logging one row per request: every row lands once, in a few dozen commits, not 1,800."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(store.home), f"p{p}", "600"], env=env)
             for p in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    log = FeatureLog(store)
    ids = log.read().column("request_id").to_pylist()
    assert sorted(ids) == sorted(f"p{p}-{i}" for p in range(3) for i in range(600))
    commits = len(lance.dataset(log.uri).versions())
    assert commits <= 3 * (600 // 100 + 1)


class GatedLog(FeatureLog):
    """A real log whose commits wait for a gate, as when the store is slow."""

    def __init__(self, store):
        super().__init__(store)
        self.gate = threading.Event()

    def _commit(self, table):
        self.gate.wait()
        super()._commit(table)


def test_write_never_waits_for_a_slow_commit_and_drops_past_its_bound(store):
    """While a commit hangs, writes return at once; past max_pending they are dropped and counted, never queued."""
    log = GatedLog(store)
    writer = log.writer(flush_rows=10, flush_seconds=60, max_pending=50, optimize_rows=None)
    results = []
    writing = threading.Thread(target=lambda: results.extend(writer.write(row(f"r{i}")) for i in range(55)))
    writing.start()
    writing.join(30)
    assert not writing.is_alive(), "write() waited for the commit"
    assert results.count(False) == 5
    log.gate.set()
    assert writer.flush(timeout=60)
    stats = writer.close()
    assert (stats.accepted, stats.written, stats.dropped, stats.pending) == (55, 50, 5, 0)
    assert sorted(log.read().column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(50))


def test_rows_are_committed_by_age_and_at_close(store):
    """A trickle of rows is committed once the oldest has waited flush_seconds; close commits the rest."""
    log = FeatureLog(store)
    writer = log.writer(flush_rows=1000, flush_seconds=0.05, optimize_rows=None)
    writer.write(row("a"))
    wait_until(lambda: writer.stats().written == 1)
    writer.write(row("b"))
    stats = writer.close()
    assert stats.written == 2 and stats.commits == 2
    assert sorted(log.read().column("request_id").to_pylist()) == ["a", "b"]
    assert writer.write(row("late")) is False and writer.stats().dropped == 1


def test_bad_rows_are_refused_or_left_out(store):
    """A row without the required columns or with a naive time is refused at once; one Arrow cannot read is counted."""
    log = FeatureLog(store)
    log.append([row("first")])
    with log.writer(flush_rows=10, optimize_rows=None) as writer:
        with pytest.raises(InvalidInputError, match="request_id"):
            writer.write({"ts": T0, "prediction": 1.0})
        with pytest.raises(InvalidInputError, match="aware datetime"):
            writer.write({**row("x"), "ts": datetime(2026, 1, 1)})
        writer.write(row("ok"))
        writer.write(row("bad", prediction="not a number"))
    assert (writer.stats().written, writer.stats().rejected) == (1, 1)
    assert sorted(log.read().column("request_id").to_pylist()) == ["first", "ok"]


def test_find_goes_through_the_request_id_index(store):
    """After optimize, find answers from the BTREE index; rows logged since are found too; quotes are data."""
    log = FeatureLog(store)
    for batch in range(3):
        log.append([row(f"r{batch}-{i}", user=i) for i in range(100)])
    log.optimize()
    log.append([row("late", user=7), row("it's", user=8)])
    assert log.find("r1-42").column("user").to_pylist() == [42]
    assert log.find("late").column("user").to_pylist() == [7]
    assert log.find("it's").column("user").to_pylist() == [8]
    assert log.find("x' OR '1'='1").num_rows == 0
    ds = lance.dataset(log.uri)
    assert len(ds.get_fragments()) == 2  # the three batches were compacted into one
    assert "ScalarIndexQuery" in ds.scanner(filter="request_id = 'r1-42'").explain_plan()


def test_writers_keep_the_log_indexed_as_it_grows(store):
    """A writer runs optimize every optimize_rows rows, so the log gets its index without anyone asking."""
    log = FeatureLog(store)
    with log.writer(flush_rows=10, flush_seconds=60, optimize_rows=30) as writer:
        for i in range(40):
            writer.write(row(f"r{i}"))
    assert [i["fields"] for i in lance.dataset(log.uri).list_indices()] == [["request_id"]]
    assert log.find("r39").num_rows == 1


def test_writer_settings_are_checked(store):
    """A flush size above the buffer bound, or a non-positive age, is refused with the rule."""
    with pytest.raises(InvalidInputError, match="at most max_pending"):
        FeatureLog(store).writer(flush_rows=100, max_pending=10)
    with pytest.raises(InvalidInputError, match="flush_seconds"):
        FeatureLog(store).writer(flush_seconds=0)


class FlakyLog(FeatureLog):
    """A real log whose first ``failures`` commits fail, as when storage blips."""

    def __init__(self, store, failures):
        super().__init__(store)
        self.failures = failures

    def _commit(self, table):
        if self.failures:
            self.failures -= 1
            raise OSError("storage unavailable")
        super()._commit(table)


def test_a_failed_commit_is_retried_and_a_dead_store_never_hangs_close(store):
    """Rows survive a storage blip (retried with backoff); against a store that stays down, close gives up and counts."""
    blip = FlakyLog(store, failures=2)
    with blip.writer(flush_rows=5, flush_seconds=0.05, optimize_rows=None) as writer:
        for i in range(5):
            writer.write(row(f"r{i}"))
        assert writer.flush(timeout=60)
    assert (writer.stats().written, writer.stats().errors) == (5, 2)
    assert sorted(blip.read().column("request_id").to_pylist()) == [f"r{i}" for i in range(5)]

    down = FlakyLog(store, failures=10**9)
    writer = down.writer(flush_rows=5, flush_seconds=0.05, optimize_rows=None)
    for i in range(5):
        writer.write(row(f"lost{i}"))
    stats = writer.close(timeout=0.5)
    assert (stats.written, stats.dropped, stats.pending) == (0, 5, 0) and stats.errors >= 1
