"""HashingReader: one read of the source, hashed ahead of the consumer, cancellable."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest

from factory.store import HashingReader


def test_chunks_come_in_order_and_the_digest_is_sha256_of_them(tmp_path):
    """The consumer sees the exact bytes, in order, and the digest matches hashlib's."""
    data = os.urandom(5 * (1 << 20) + 17)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with HashingReader.open(path, chunk=1 << 20, buffers=2) as reader:
        seen = b"".join(bytes(chunk) for chunk in reader.chunks())
        assert seen == data
        assert reader.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_the_source_is_read_once(tmp_path):
    """Every byte is read exactly once, however many stages look at it."""

    class Counting(io.BytesIO):
        read_bytes = 0

        def readinto(self, buf):
            n = super().readinto(buf)
            Counting.read_bytes += n
            return n

    data = os.urandom(3 << 20)
    with HashingReader(Counting(data), chunk=1 << 18, buffers=3) as reader:
        for _ in reader.chunks():
            pass
        assert reader.digest.startswith("sha256:")
    assert Counting.read_bytes == len(data)


def test_digest_before_the_end_is_refused():
    """A digest of part of a stream would be a wrong answer, so there is none."""
    with HashingReader(io.BytesIO(os.urandom(4 << 20)), chunk=1 << 20) as reader:
        chunks = reader.chunks()
        next(chunks)
        with pytest.raises(RuntimeError, match="only after every chunk"):
            _ = reader.digest


def test_a_source_error_reaches_the_consumer_after_the_good_bytes():
    """A read failing midway is raised to the consumer, not swallowed as a short file."""

    class Breaks(io.RawIOBase):
        calls = 0

        def readable(self):
            return True

        def readinto(self, buf):
            Breaks.calls += 1
            if Breaks.calls > 2:
                raise OSError("disk went away")
            buf[:] = b"x" * len(buf)
            return len(buf)

    with HashingReader(Breaks(), chunk=1 << 16) as reader:
        got = 0
        with pytest.raises(OSError, match="disk went away"):
            for chunk in reader.chunks():
                got += len(chunk)
        assert got == 2 << 16
        with pytest.raises(RuntimeError):
            _ = reader.digest


def test_close_from_another_thread_stops_a_running_consumer():
    """Cancelling while a consumer iterates ends it with InterruptedError, without hanging."""
    endless = io.BufferedReader(open("/dev/zero", "rb", buffering=0))
    reader = HashingReader(endless, chunk=1 << 16, buffers=2, owns_stream=True)
    outcome: list[BaseException] = []

    def consume():
        try:
            for _ in reader.chunks():
                pass
        except BaseException as exc:
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    reader.close()
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], InterruptedError)
    assert endless.closed
