"""Shared helpers for the benchmarks: timing whole processes, medians, tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def time_call(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_process(argv: Sequence[str] | str, *, shell: bool = False, env: dict | None = None,
                 before: Callable[[], object] | None = None) -> float:
    """Wall time of one whole process (start-up included), failing loudly if it fails.

    Dirty pages left by the previous run are flushed first (untimed), so no tool
    pays for another's disk writeback.
    """
    if before is not None:
        before()
    os.sync()
    start = time.perf_counter()
    subprocess.run(argv, shell=shell, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in header:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*(f"{c:.3f}" if isinstance(c, float) else str(c) for c in row))
    Console().print(table)


def machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB"


def side_by_side(results: dict[str, list[float]], limit: str, title: str, *, short: str | None = None,
                 ) -> dict[str, float]:
    """Print each tool's median, min, max and ratio to ``limit``'s median; return the medians."""
    medians = {k: median(v) for k, v in results.items()}
    rows = [(k, medians[k], min(v), max(v), medians[k] / medians[limit]) for k, v in results.items()]
    print_table(title, ["tool", "median", "min", "max", f"x {short or limit.split()[0]}"], rows)
    return medians


def fresh_dvc_repo(repo, dvc, *, fill) -> None:
    """An empty git + DVC repository at ``repo`` (replacing any), then ``fill(repo)`` (untimed set-up)."""
    import shutil

    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(dvc), "init", "-q"], cwd=repo, check=True)
    fill(repo)
