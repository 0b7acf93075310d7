"""A small closed-loop HTTP/1.1 load generator, run in its own process so it never shares a GIL with a server.

``python -m benchmarks._loadgen URL --body FILE -c 8 -d 10`` keeps ``-c`` keep-alive
connections busy for ``-d`` seconds (after ``--warmup``), each sending the next POST as
soon as the previous answer is read (or, with ``--rate R``, on a fixed schedule of R
requests/s over all connections: a fixed moderate load), and prints JSON: requests, errors, throughput and
latency percentiles. Raw asyncio streams keep the client's own cost per request small
(a few tens of microseconds), so the server, not the client, is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request and read its whole answer; the status code."""
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, request: bytes, until: float, warm_until: float,
                      latencies: list[float], errors: list[object], interval: float = 0.0) -> None:
    """One keep-alive connection sending back to back (or every ``interval`` seconds) until ``until``; reconnects
    after a failure."""
    due = time.perf_counter()
    while time.perf_counter() < until:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if interval:
                    due += interval
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                start = time.perf_counter()
                if start >= until:
                    return
                try:
                    status = await _exchange(reader, writer, request)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                    if start >= warm_until:
                        errors.append(type(exc).__name__)
                    break
                if start >= warm_until:
                    latencies.append(time.perf_counter() - start)
                    if status != 200:
                        errors.append(status)
        finally:
            writer.close()


async def run(url: str, body: bytes, connections: int, seconds: float, warmup: float,
              rate: float = 0.0) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors: list[object] = []
    start = time.perf_counter()
    warm_until = start + warmup
    until = warm_until + seconds
    interval = connections / rate if rate else 0.0
    await asyncio.gather(*(_connection(host, port, request, until, warm_until, latencies, errors, interval)
                           for _ in range(connections)))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": len(errors),
        "rps": n / seconds,
        "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"),
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="file holding the POST body")
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("-d", "--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s over all connections (0: back to back)")
    args = parser.parse_args(argv)
    with open(args.body, "rb") as f:
        body = f.read()
    result = asyncio.run(run(args.url, body, args.connections, args.seconds, args.warmup, args.rate))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
