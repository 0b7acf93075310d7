"""Signature checks spread over processes: Ed25519 verification holds the GIL, threads do not help.

Small batches run in the calling process (a pool costs a few hundred milliseconds to
start); large ones go to a spawned process pool, one worker per usable core, in
contiguous chunks. Workers get plain data (bytes and the trusted public keys) and
return problems as tuples, so nothing unpicklable crosses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TypeVar

from factory.gates.keys import TrustedKeys

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


def _map(fn: Callable[..., list[R]], items: Sequence[T], *args: object, workers: int | None) -> list[R]:
    workers = usable_cores() if workers is None else max(1, workers)
    if workers == 1 or len(items) < POOL_THRESHOLD:
        return fn(items, *args)
    out: list[R] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for part in pool.map(fn, _chunks(items, workers * 4), *([a] * (workers * 4) for a in args)):
            out.extend(part)
    return out


def _envelope_chunk(items: Sequence[tuple[int, bytes]], trust: TrustedKeys) -> list[tuple[int, str, str]]:
    from factory.gates.attestations import open_attestation
    from factory.gates.dsse import EnvelopeError

    problems = []
    for index, data in items:
        try:
            open_attestation(data, trust)
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
