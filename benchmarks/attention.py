"""GraphMultiheadAttention against what a user would otherwise use, in one run.

Usage: python benchmarks/attention.py [--quick] [--only dense|window|graph]

Every row is a forward + backward pass of one attention layer (projections included), the
median of several repeats after a warm-up. Peak memory is the growth of the peak RSS of a fresh
process running that one configuration, so each number includes every temporary. Ratios are
graphattn / baseline: below 1 is better.

* dense: B=32, n=128, embed_dim=512, 8 heads, dense pattern vs ``nn.MultiheadAttention``.
* window: w=64, embed_dim=256, 4 heads, one sequence of n positions; the window backend vs
  ``nn.MultiheadAttention`` with a boolean band ``attn_mask`` (SDPA inside).
* graph: N=100,000 nodes, E=1,000,000 random edges, 64 channels, 4 heads; the edges backend vs
  ``torch_geometric.nn.TransformerConv`` (heads=4, out_channels=16, root_weight=False).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys


def run_one(kind: str, impl: str, n: int, repeats: int) -> dict:
    """One configuration in this process: median seconds and peak RSS growth (MiB)."""
    import torch

    from graphattn import GraphMultiheadAttention, patterns

    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "dense":
        batch, length, dim, heads = 32, n, 512, 8
        layer = GraphMultiheadAttention(dim, heads)
        x = torch.randn(batch * length, dim, requires_grad=True)
        if impl == "graphattn":
            ptr = torch.arange(batch + 1) * length
            fn = lambda: layer(x, pattern=patterns.dense(), ptr=ptr)  # noqa: E731
        else:
            mha = layer.to_torch()
            xb = x.view(batch, length, dim)
            fn = lambda: mha(xb, xb, xb, need_weights=False)[0]  # noqa: E731
    elif kind == "window":
        dim, heads, w = 256, 4, 64
        layer = GraphMultiheadAttention(dim, heads)
        x = torch.randn(n, dim, requires_grad=True)
        pattern = patterns.window(w)
        if impl == "graphattn":
            fn = lambda: layer(x, pattern=pattern)  # noqa: E731
        else:
            mha = layer.to_torch()
            idx = torch.arange(n)
            blocked = (idx.view(-1, 1) - idx.view(1, -1)).abs() > w  # True = blocked (torch MHA)
            xb = x.unsqueeze(0)
            fn = lambda: mha(xb, xb, xb, attn_mask=blocked, need_weights=False)[0]  # noqa: E731
    elif kind == "graph":
        num_nodes, num_edges, dim, heads = 100_000, 1_000_000, 64, 4
        x = torch.randn(num_nodes, dim, requires_grad=True)
        edge_index = torch.randint(0, num_nodes, (2, num_edges))
        if impl == "graphattn":
            layer = GraphMultiheadAttention(dim, heads, backend="edges")
            fn = lambda: layer(x, edge_index)  # noqa: E731
        else:
            from torch_geometric.nn import TransformerConv

            conv = TransformerConv(dim, dim // heads, heads=heads, root_weight=False)
            fn = lambda: conv(x, edge_index)  # noqa: E731
    else:
        raise ValueError(kind)

    def step():
        out = fn()
        out.square().mean().backward()

    from graphattn.utils.bench import median_seconds

    seconds = median_seconds(step, repeats)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"seconds": seconds, "peak_mib": peak}


def measure(kind: str, impl: str, n: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, impl, str(n), str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"seconds": math.nan, "peak_mib": math.nan, "error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(xs, ys) -> float:
    """Least-squares exponent of y ~ x^k on log-log axes."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--only", choices=["dense", "window", "graph"])
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, impl, n, repeats = args.one
        print(json.dumps(run_one(kind, impl, int(n), int(repeats))))
        return

    repeats = 3 if args.quick else 5
    print("| benchmark | size | graphattn (s) | baseline (s) | time ratio | graphattn peak (MiB) | baseline peak (MiB) | memory ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    def row(name, size, ours, theirs):
        print(
            f"| {name} | {size} | {ours['seconds']:.3f} | {theirs['seconds']:.3f} | "
            f"{ours['seconds'] / theirs['seconds']:.2f} | {ours['peak_mib']:.0f} | "
            f"{theirs['peak_mib']:.0f} | {ours['peak_mib'] / max(theirs['peak_mib'], 1):.2f} |",
            flush=True,
        )

    if args.only in (None, "dense"):
        row("dense vs nn.MultiheadAttention", "B=32 n=128 d=512 h=8",
            measure("dense", "graphattn", 128, repeats), measure("dense", "torch", 128, repeats))
    if args.only in (None, "graph"):
        row("graph vs PyG TransformerConv", "N=100k E=1M d=64 h=4",
            measure("graph", "graphattn", 0, repeats), measure("graph", "pyg", 0, repeats))
    if args.only in (None, "window"):
        sizes = [1024, 4096, 16384] if args.quick else [1024, 4096, 16384, 65536]
        ours = {n: measure("window", "graphattn", n, repeats) for n in sizes}
        for n in sizes:
            if n <= 16384:
                row("window(64) vs MHA + band mask", f"n={n} d=256 h=4", ours[n], measure("window", "torch", n, repeats))
            else:
                r = ours[n]
                print(f"| window(64), graphattn only | n={n} d=256 h=4 | {r['seconds']:.3f} | - | - | {r['peak_mib']:.0f} | - | - |")
        ns = list(ours)
        print(f"\nwindow backend scaling exponents over n={ns}: time "
              f"{slope(ns, [ours[n]['seconds'] for n in ns]):.2f}, peak memory "
              f"{slope(ns, [max(ours[n]['peak_mib'], 1) for n in ns]):.2f}")


if __name__ == "__main__":
    main()
