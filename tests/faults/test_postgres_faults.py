"""The PostgreSQL catalog under contention and faults: 16 writer processes on one ref, a writer
killed inside its transaction, the server restarted under writes, the server gone for longer
than the retry window.

These tests stop and restart their server, so they run on one of their own (module scope),
not on the session's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from factory.errors import CatalogUnavailableError
from factory.store._postgres import PostgresCatalog

REF = "counter"
START = "sha256:" + "0" * 64

# A writer process: moves REF by compare-and-swap N times (or until the stop file exists),
# re-reading on every conflict or retryable error, and prints one JSON line per acknowledged move.
_WRITER = """
import json, os, sys
from factory.errors import CatalogUnavailableError, RefConflictError
from factory.store._postgres import PostgresCatalog
url, ref, writer, moves, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
catalog = PostgresCatalog(url, retry_s=float(sys.argv[6]))
done = unavailable = 0
while done < moves and not os.path.exists(stop):
    new = f"sha256:{writer:02x}{done + 1:062x}"
    try:
        current = catalog.ref(ref).target
        if current != new:  # equal: the last try landed although its answer was lost
            catalog.set_ref(ref, new, expected=current, actor=f"writer-{writer}", reason="")
    except RefConflictError:
        continue
    except CatalogUnavailableError as exc:
        assert exc.retryable
        unavailable += 1
        continue
    done += 1
    print(json.dumps({"ack": new}), flush=True)
print(json.dumps({"unavailable": unavailable}), flush=True)
"""


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server of this module's own, since these tests restart it."""
    from _postgres import serving

    yield from serving()


@pytest.fixture
def url(server):
    """A fresh catalog database holding REF at START."""
    url = server.create_database()
    PostgresCatalog(url).set_ref(REF, START, expected=None, actor="test", reason="start")
    yield url
    server.drop_database(url)


class Writers:
    """Writer processes and the moves they acknowledged, read as they come."""

    def __init__(self, url: str, count: int, moves: int, stop_file: str, retry_s: float = 30.0):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, REF, str(w), str(moves), stop_file,
                                        str(retry_s)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                      for w in range(count)]
        self.acks: list[str] = []
        self.unavailable = 0
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, args=(p,), daemon=True) for p in self.procs]
        for t in self._readers:
            t.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            record = json.loads(line)
            with self._lock:
                if "ack" in record:
                    self.acks.append(record["ack"])
                else:
                    self.unavailable += record["unavailable"]

    def wait_for(self, count: int, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acks) < count:
            failed = [p for p in self.procs if p.poll() not in (None, 0)]
            assert not failed, failed[0].stderr.read()
            assert time.monotonic() < deadline, f"only {len(self.acks)} of {count} moves acknowledged"
            time.sleep(0.05)

    def join(self, timeout_s: float = 300) -> None:
        for p in self.procs:
            assert p.wait(timeout=timeout_s) == 0, p.stderr.read()
        for t in self._readers:
            t.join(timeout=30)


def _assert_one_chain(catalog: PostgresCatalog, acknowledged: list[str]) -> None:
    """Every move started where the previous one ended, and every acknowledged move is one of them."""
    history = catalog.history(REF)
    assert history[0].new == START
    for before, after in zip(history, history[1:]):
        assert after.old == before.new, f"move {after.seq} did not start where {before.seq} ended"
    moved_to = [c.new for c in history[1:]]
    assert len(set(moved_to)) == len(moved_to)
    assert set(acknowledged) <= set(moved_to)
    assert catalog.ref(REF).target == history[-1].new


def test_sixteen_writers_moving_one_ref_lose_no_update(url, tmp_path):
    """16 processes moving one ref by compare-and-swap: every acknowledged move is in one unbroken chain."""
    writers = Writers(url, count=16, moves=8, stop_file=str(tmp_path / "stop"))
    writers.join()
    catalog = PostgresCatalog(url)
    assert len(writers.acks) == 16 * 8
    _assert_one_chain(catalog, writers.acks)
    assert len(catalog.history(REF)) == 1 + 16 * 8  # nothing moved that was not acknowledged


def test_a_writer_killed_inside_its_transaction_leaves_the_catalog_consistent(url):
    """SIGKILL between a ref's update and its commit: the move never happened, and nothing stays locked."""
    code = f"""
import time
from factory.store._postgres import PostgresCatalog
record = PostgresCatalog._record_change
def stall(self, db, *args, **kwargs):
    seq = record(self, db, *args, **kwargs)
    print("inside", flush=True)
    time.sleep(600)
PostgresCatalog._record_change = stall
PostgresCatalog({url!r}).set_ref({REF!r}, "sha256:" + "d" * 64, expected={START!r}, actor="doomed", reason="")
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "inside"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    catalog = PostgresCatalog(url)
    assert catalog.ref(REF).target == START
    assert [c.actor for c in catalog.history(REF)] == ["test"]
    # The dead writer's row lock is gone with its session: the next move goes through.
    change = catalog.set_ref(REF, "sha256:" + "e" * 64, expected=START, actor="next", reason="")
    assert [c.seq for c in catalog.history(REF)][-1] == change.seq


@pytest.mark.parametrize("retry_s", [30.0, 0.1], ids=["retried-inside", "surfaced-to-the-writer"])
def test_a_server_restart_during_writes_loses_nothing_acknowledged(server, url, tmp_path, retry_s):
    """pg_ctl restart while 4 writers move a ref: they reconnect (or get a retryable error, re-read and go on),
    and every acknowledged move is kept."""
    stop = tmp_path / "stop"
    writers = Writers(url, count=4, moves=10_000, stop_file=str(stop), retry_s=retry_s)
    writers.wait_for(20)
    server.pg_ctl("restart")
    after_restart = len(writers.acks)
    writers.wait_for(after_restart + 20)
    stop.touch()
    writers.join()
    catalog = PostgresCatalog(url)
    _assert_one_chain(catalog, writers.acks)
    assert len(writers.acks) >= after_restart + 20


def test_a_server_gone_longer_than_the_retry_window_is_a_retryable_error_then_recovers(server, url):
    """With the server stopped, an operation fails as retryable after its window; once it is back, the same catalog works."""
    catalog = PostgresCatalog(url, retry_s=2.0, connect_timeout_s=2.0)
    assert catalog.ref(REF).target == START  # a pooled connection, soon dead
    server.pg_ctl("stop")
    try:
        with pytest.raises(CatalogUnavailableError, match="could not be reached") as info:
            catalog.ref(REF)
        assert info.value.retryable and info.value.code == "CATALOG_UNAVAILABLE"
        assert "127.0.0.1" in str(info.value)
    finally:
        server.pg_ctl("start")
    assert catalog.set_ref(REF, "sha256:" + "f" * 64, expected=START, actor="back", reason="").old == START
