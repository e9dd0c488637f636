"""Build time and peak memory of pattern edges at large n (one process per measurement).

Usage: python benchmarks/patterns.py [--n 1000000]

Peak memory is the growth of the process's peak RSS while building, so it includes every
temporary; the output edge_index alone takes 16 bytes an edge.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PATTERNS = {
    "window(64)": "patterns.window(64)",
    "causal() & window(64)": "patterns.causal() & patterns.window(64)",
    "dilated(32, 2)": "patterns.dilated(32, 2)",
    "block(128)": "patterns.block(128)",
    "bigbird(64, 2, 3)": "patterns.bigbird(64, num_global=2, num_random=3, seed=0)",
}


def measure(expr: str, n: int, repeats: int) -> dict:
    import torch

    from graphattn import patterns

    pattern = eval(expr, {"patterns": patterns})
    ptr = torch.tensor([0, n])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        edge_index = pattern.edge_index(ptr)
        times.append(time.perf_counter() - start)
        num_edges = edge_index.size(1)
        del edge_index
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # KiB on Linux
    times.sort()
    return {"edges": num_edges, "seconds": times[len(times) // 2], "peak_mib": peak / 1024,
            "output_mib": num_edges * 16 / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(PATTERNS[args.one], args.n, args.repeats)))
        return
    print(f"n = {args.n:,} (one example), median of {args.repeats} builds")
    print(f"| pattern | edges | build time (s) | peak memory (MiB) | edge_index (MiB) |")
    print(f"|---|---:|---:|---:|---:|")
    for name in PATTERNS:
        out = subprocess.run(
            [sys.executable, __file__, "--n", str(args.n), "--repeats", str(args.repeats), "--one", name],
            check=True, capture_output=True, text=True,
        )
        r = json.loads(out.stdout)
        print(f"| `{name}` | {r['edges']:,} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['output_mib']:.0f} |")


if __name__ == "__main__":
    main()
