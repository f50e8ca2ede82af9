"""Timing, single-core pinning and table printing shared by the benchmarks.

Why medians and p95 of per-call timings rather than a mean of a loop: a preview frame is late when
one call is slow, so the tail matters, and a median is robust to the odd scheduler hiccup on a
shared 2-core CI box. Every figure is printed next to a baseline taken in the same process, so a
slower machine moves both and the ratio stays meaningful.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks import NUMPY_WAS_IMPORTED_FIRST, THREAD_VARIABLES


@dataclass(frozen=True)
class Timing:
    """Per-call wall times in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(fn: Callable[[], object], runs: int, warmup: int = 1) -> Timing:
    """Time ``runs`` calls of ``fn`` individually, after ``warmup`` untimed calls, GC paused.

    GC is paused so a collection triggered by an earlier benchmark's garbage is not billed here; the
    allocation cost of each candidate still shows up (and is reported separately via tracemalloc).
    """
    for _ in range(warmup):
        fn()
    samples = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    finally:
        if was_enabled:
            gc.enable()
    return Timing(tuple(samples))


def peak_allocated(fn: Callable[[], object], calls: int = 100) -> int:
    """Peak bytes traced by tracemalloc above the starting level across ``calls`` calls of ``fn``.

    numpy reports its data buffers to tracemalloc, so a fresh result array shows up here while
    writing into preallocated buffers does not.
    """
    fn()  # let lazy one-time allocations (caches, first-call buffers) happen outside the window
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - base)


def pin_to_one_core() -> str:
    """Pin this process to one CPU (Linux) and describe the threading setup for the report."""
    settings = " ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES)
    parts = [f"{settings} (set before numpy import)"]
    if NUMPY_WAS_IMPORTED_FIRST:
        parts.append("WARNING: numpy was imported before the benchmarks package, so BLAS may be multi-threaded")
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        parts.append(f"process pinned to CPU {cpu}")
    else:
        parts.append("CPU affinity not available on this OS: not pinned")
    return "; ".join(parts)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline > 0 else "n/a"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    """Print a compact fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = (str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    print(f"\n== {title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for note in notes:
        print(f"   {note}")
    sys.stdout.flush()
