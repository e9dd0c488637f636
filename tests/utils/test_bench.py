"""Timing and memory probes, and the result tables."""
import json
import platform
import subprocess
import sys

import pytest
import torch

from graphattn.utils import bench
from graphattn.utils.tables import markdown_table, write_rows


def test_fit_exponent():
    ns = [100, 200, 400, 800]
    assert bench.fit_exponent(ns, [3 * n**2 for n in ns]) == pytest.approx(2.0)
    assert bench.fit_exponent(ns, [n for n in ns]) == pytest.approx(1.0)
    assert bench.fit_exponent([1], [1]) != bench.fit_exponent([1], [1])  # nan: one point fits nothing


def test_peak_memory_counts_a_temporary():
    peak = bench.peak_memory_mib(lambda: torch.ones(16, 1024, 1024))  # 64 MiB
    if peak is not None:  # Linux only
        assert 50 < peak < 90


class FakeClock:
    """perf_counter replacement: each call of the timed function takes the next duration."""

    def __init__(self, durations):
        self.durations, self.now, self.started = list(durations), 0.0, False

    def __call__(self):
        if self.started:
            self.now += self.durations.pop(0)
        self.started = not self.started
        return self.now


def test_fastest_seconds_is_the_minimum_and_repeats_short_calls(monkeypatch):
    monkeypatch.setattr(bench.time, "perf_counter", FakeClock([0.5, 0.2, 0.4]))
    assert bench.fastest_seconds(lambda: None, repeats=3, min_seconds=0.0) == pytest.approx(0.2)
    calls = []
    monkeypatch.setattr(bench.time, "perf_counter", FakeClock([0.001] * 10))
    assert bench.fastest_seconds(lambda: calls.append(1), repeats=2, min_seconds=1.0, max_repeats=7) == pytest.approx(0.001)
    assert len(calls) == 7  # far shorter than min_seconds: repeated up to max_repeats


def test_median_seconds_warms_up_then_takes_the_median(monkeypatch):
    calls = []
    monkeypatch.setattr(bench.time, "perf_counter", FakeClock([0.3, 0.1, 0.9]))
    assert bench.median_seconds(lambda: calls.append(1), repeats=3) == pytest.approx(0.3)
    assert len(calls) == 4  # one warm-up call, not timed


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_keeps_large_blocks_off_mmap():
    # In a child process: the setting is process-wide, and a test must not change its worker.
    probe = """
import ctypes, json, sys
from graphattn.utils.bench import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)
print(json.dumps({"kept": kept, "mmapped_blocks": libc.mallinfo2().hblks - before}))
"""
    results = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out)
    assert results["keep"]["kept"] is True
    assert results["default"]["mmapped_blocks"] == 1  # glibc's default: 64 MiB come from mmap
    assert results["keep"]["mmapped_blocks"] == 0  # raised threshold: from the heap, reused after free


def test_markdown_table_and_rows(tmp_path):
    rows = [{"a": 1, "b": 0.12345, "c": None}, {"a": 2, "b": float("inf"), "c": "x"}]
    assert markdown_table(rows, ["a", "b", "c"]) == "| a | b | c |\n|---|---|---|\n| 1 | 0.123 |  |\n| 2 | inf | x |"
    assert markdown_table(rows, ["a"], ["A"]).startswith("| A |")
    json_path, csv_path = write_rows(rows, tmp_path / "out", "t")
    assert json.loads(json_path.read_text())[0]["a"] == 1
    assert csv_path.read_text().splitlines()[0] == "a,b,c"
