"""Why the flex backend's generic rule is a hash table: compile time of FlexAttention on CPU for a
``mask_mod`` that finds a pair by a binary search of k chained steps, against the hash table lookup
(``graphattn.ops.flex.EdgeTable``) of the same pairs.

Usage: python benchmarks/flex_compile.py [--steps 1,2,3,4] [--n 256]

Each case compiles ``torch.compile(flex_attention)`` (forward, one thread, inductor's FX graph cache
off) in a fresh process on one sequence of n tokens whose pairs are random (about 8 keys a query),
and reports the seconds of the first call, which is the compile. A binary search feeds each step's
bounds to the next; inductor's CPU FlexAttention template inlined those chains without sharing them,
and the time grew faster than exponentially: 12, 16, 29 and 204 s for 1 to 4 steps in our run (torch
2.13, 2 shared cores), against 11 s for the hash table's 8 probes, which are independent of one
another. About 5 minutes on 2 cores (``--steps 1,2,3``: 1 minute).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def run(kind: str, steps: int, n: int) -> dict:
    import time
    import warnings

    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from graphattn.ops.flex import EdgeTable

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    pairs = torch.unique(torch.randint(0, n, (n,), generator=g) * n + torch.randint(0, n, (n,), generator=g) % n)
    edge_index = torch.stack([pairs % n, pairs // n])  # sorted by query, then key
    if kind == "binary search":
        rowptr = torch.searchsorted(edge_index[1], torch.arange(n + 1))
        col = torch.cat([edge_index[0], edge_index.new_full((1,), -1)])

        def mask_mod(b, h, i, j):
            lo, hi = rowptr[i], rowptr[i + 1]
            for _ in range(steps):
                mid = (lo + hi) // 2
                right = (lo < hi) & (col[mid] < j)
                lo, hi = torch.where(right, mid + 1, lo), torch.where(right, hi, mid)
            return col[lo] == j
    else:
        table = EdgeTable.of(edge_index)
        steps = table.probes

        def mask_mod(b, h, i, j):
            return table.rule(i, j)

    mask = create_block_mask(mask_mod, 1, 1, n, n, device="cpu")
    q = torch.randn(1, 2, n, 16, generator=g)
    start = time.perf_counter()
    torch.compile(flex_attention, dynamic=False)(q, q, q, block_mask=mask)
    return {"lookup": kind, "chained steps / probes": steps, "compile s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1,2,3,4", help="binary search steps to compile (comma-separated)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in this process
    args = parser.parse_args()
    if args.case:
        kind, steps = args.case.split(":")
        print(json.dumps(run(kind, int(steps), args.n)))
        return
    from graphattn.utils.tables import markdown_table

    cases = [f"binary search:{s}" for s in args.steps.split(",")] + ["hash table:0"]
    env = dict(os.environ, TORCHINDUCTOR_FX_GRAPH_CACHE="0")
    rows = []
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--n", str(args.n)], env=env,
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(markdown_table(rows, ["lookup", "chained steps / probes", "compile s"]))


if __name__ == "__main__":
    main()
