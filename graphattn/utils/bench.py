"""Timing and memory probes for benchmarks and the pattern comparison.

Speed is measured as ratios against a baseline in the same run (medians or minima of repeats
after a warm-up), never as an absolute time in a test.
"""
from __future__ import annotations

import ctypes
import gc
import math
import statistics
import time
from typing import Callable, Optional, Sequence

__all__ = ["median_seconds", "fastest_seconds", "peak_memory_mib", "fit_exponent", "keep_freed_memory"]


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fastest_seconds(fn: Callable[[], object], repeats: int = 2, min_seconds: float = 0.25,
                    max_repeats: int = 30) -> float:
    """Fastest wall time of ``fn`` over at least ``repeats`` calls (the caller warms up).

    The minimum is the figure least disturbed by other processes on the machine (as ``timeit``
    advises); calls shorter than ``min_seconds / repeats`` are repeated up to ``max_repeats``
    times, so that short and long calls are measured about equally well.
    """
    times: list[float] = []
    while len(times) < max(1, repeats) or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory_mib(fn: Callable[[], object]) -> Optional[float]:
    """Peak resident memory that ``fn`` adds, in MiB (Linux; ``None`` elsewhere).

    torch's CPU allocator has no peak counter, so this resets the kernel's high-water mark
    (``/proc/self/clear_refs``) and reads it back: every temporary counts, as in a real run.
    """
    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the baseline is honest
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_bytes("VmRSS:")
        fn()
        return (_status_bytes("VmHWM:") - base) / 2**20
    except (OSError, KeyError):
        return None


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: the k of ``y ~ x^k``."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return math.nan
    mx = sum(a for a, _ in pairs) / len(pairs)
    my = sum(b for _, b in pairs) / len(pairs)
    var = sum((a - mx) ** 2 for a, _ in pairs)
    return sum((a - mx) * (b - my) for a, b in pairs) / var


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks of any size instead of unmapping those above 32 MiB.

    A process-wide setting: only entry points (benchmarks, ``graphattn compare``) call it.

    glibc serves an allocation above its mmap threshold (at most 32 MiB by default) with fresh
    pages from the kernel and returns them on free, so every such tensor pays a page fault per
    4 KiB page at each allocation. An ``[E, heads]`` tensor crosses 32 MiB near E = 2M edges,
    where the edges backend's time per edge then rose by ~1.7x: a cost of the allocator, not of
    the algorithm, and one that jemalloc or tcmalloc do not have. Users can do the same with
    ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824``. Returns whether it could (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
