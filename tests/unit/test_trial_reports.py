"""A trial's function returns only once Tune has taken its last forwarded report (Ray 2.60 race)."""

from __future__ import annotations

import queue
import threading
import time

from factory.train._trials import settle_reports


class _Forwarded:
    """What ``ray.util.queue.Queue`` offers the waiting side: ``empty()``."""

    def __init__(self, items: int):
        self.items = items

    def empty(self) -> bool:
        return self.items == 0


class _Session:
    def __init__(self, forwarded: int):
        self._inter_actor_queue = _Forwarded(forwarded)
        self.result_queue: queue.Queue = queue.Queue(1)


def test_it_waits_until_the_last_forwarded_report_has_left_the_result_slot():
    """Returning while Tune's main thread still had a report to move deadlocked the trial: it must wait."""
    session = _Session(forwarded=1)
    taken = threading.Event()

    def main_thread() -> None:  # moves the forwarded report into the slot, then Tune takes it
        time.sleep(0.3)
        session._inter_actor_queue.items = 0
        session.result_queue.put("epoch 2")
        time.sleep(0.3)
        session.result_queue.get()
        taken.set()

    mover = threading.Thread(target=main_thread)
    mover.start()
    assert settle_reports(session, timeout_s=10, quiet_s=0.2, poll_s=0.01)
    assert taken.is_set()
    mover.join()


def test_it_gives_up_after_its_timeout_and_says_so():
    """A report nobody takes does not hold the trial for ever."""
    session = _Session(forwarded=1)
    started = time.monotonic()
    assert settle_reports(session, timeout_s=0.3, quiet_s=0.1, poll_s=0.01) is False
    assert time.monotonic() - started < 5


def test_a_session_without_the_queues_is_left_alone():
    """Another Ray's session (no inter-actor queue) returns at once."""
    assert settle_reports(object(), timeout_s=10) is False
