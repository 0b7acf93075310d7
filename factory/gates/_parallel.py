"""Signature checks spread over processes: Ed25519 verification holds the GIL, threads do not help.

Small batches run in the calling process (a worker costs a fraction of a second to
start); large ones are split into one contiguous chunk per usable core, each checked by
a fresh ``python -m factory.gates._worker`` that reads its chunk from a pipe and writes
the problems back. Fresh interpreters, not ``multiprocessing``: forking a process that
holds threads (a Ray driver, say) can deadlock, and spawn re-imports the caller's main
script, which breaks under ``python -`` and re-runs unguarded scripts. Workers get plain
data as JSON (the chunk, with bytes in base64, and the trusted public keys as their
``to_dict``) and write their problems back as JSON: nothing crosses the pipe that could
run code when read.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from factory.errors import FactorySystemError
from factory.gates.keys import TrustedKey, TrustedKeys

__all__ = ["usable_cores", "check_envelopes", "check_notes", "POOL_THRESHOLD"]

T = TypeVar("T")
R = TypeVar("R")
POOL_THRESHOLD = 2000


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _chunks(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    size = max(1, -(-len(items) // parts))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _worker_env() -> dict[str, str]:
    """The environment of a worker: the caller's, with this copy of factory first on the path."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def encode_job(name: str, chunk: Sequence[tuple[int, bytes | str]], trust: TrustedKeys, *args: str) -> bytes:
    """One worker's job as JSON: the function's name, its chunk (bytes in base64), the keys, the rest."""
    items = [[index, {"b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value]
             for index, value in chunk]
    return json.dumps({"job": name, "items": items, "trust": [key.to_dict() for key in trust],
                       "args": list(args)}).encode()


def decode_job(data: bytes) -> tuple[str, tuple]:
    """``encode_job``'s inverse: the function's name and its arguments."""
    job = json.loads(data)
    items = [(index, base64.b64decode(value["b64"]) if isinstance(value, dict) else value)
             for index, value in job["items"]]
    trust = TrustedKeys.of(*(TrustedKey.from_dict(key) for key in job["trust"]))
    return job["job"], (items, trust, *job["args"])


def _map(fn: Callable[..., list[R]], items: Sequence[T], *args: object, workers: int | None) -> list[R]:
    workers = usable_cores() if workers is None else max(1, workers)
    if workers == 1 or len(items) < POOL_THRESHOLD:
        return fn(items, *args)
    env = _worker_env()
    procs = [subprocess.Popen([sys.executable, "-m", "factory.gates._worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in _chunks(items, workers)]
    try:
        for proc, chunk in zip(procs, _chunks(items, workers), strict=True):
            proc.stdin.write(encode_job(fn.__name__, chunk, *args))
            proc.stdin.close()
        out: list[R] = []
        for proc in procs:
            data, err = proc.stdout.read(), proc.stderr.read()
            if proc.wait() != 0 or not data:
                raise FactorySystemError(f"a signature-checking worker failed (exit {proc.returncode}): "
                                         f"{err.decode(errors='replace').strip()[-500:]}")
            out.extend(tuple(problem) for problem in json.loads(data))
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _envelope_chunk(items: Sequence[tuple[int, bytes]], trust: TrustedKeys) -> list[tuple[int, str, str]]:
    from factory.gates.attestations import check_envelope
    from factory.gates.dsse import EnvelopeError

    problems = []
    for index, data in items:
        try:
            check_envelope(data, trust)
        except EnvelopeError as exc:
            problems.append((index, exc.kind, str(exc)))
    return problems


def check_envelopes(items: Sequence[tuple[int, bytes]], trust: TrustedKeys, *,
                    workers: int | None = None) -> list[tuple[int, str, str]]:
    """``(index, kind, detail)`` for every entry whose envelope does not verify against ``trust``."""
    return sorted(_map(_envelope_chunk, list(items), trust, workers=workers))


def _note_chunk(items: Sequence[tuple[int, str]], trust: TrustedKeys, origin: str) -> list[tuple[int, str]]:
    from factory.errors import VerificationError
    from factory.gates.notes import open_checkpoint

    problems = []
    for index, note in items:
        try:
            open_checkpoint(note, trust, origin=origin)
        except VerificationError as exc:
            problems.append((index, str(exc)))
    return problems


def check_notes(items: Sequence[tuple[int, str]], trust: TrustedKeys, origin: str, *,
                workers: int | None = None) -> dict[int, str]:
    """``{record index: problem}`` for every checkpoint note that does not verify."""
    return dict(_map(_note_chunk, list(items), trust, origin, workers=workers))
