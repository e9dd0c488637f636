"""The window kernel (banded attention) vs SDPA with a boolean band mask: forward + backward time and peak memory.

Usage: python benchmarks/window.py [--repeats 3] [--w 64] [--heads 4] [--dim 64]

One example of length n, window(w) (left = right = w), float32, CPU, what a user would otherwise
write: ``F.scaled_dot_product_attention`` with a boolean ``[n, n]`` band mask (True = may attend).
Each (backend, n) runs in its own process: a warm-up pass, then the median wall time of
``repeats`` forward + backward passes, and the growth of the process's peak RSS from just before
the inputs are built, so it counts inputs, gradients, SDPA's mask and every temporary. Takes
about 1.5 minutes on 2 cores (SDPA at n=16384 is most of it).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

SDPA_NS = [1024, 4096, 16384]
BANDED_NS = SDPA_NS + [65536]
WARMUP_N = 1024  # SDPA at n=16384 takes seconds a pass: warm the kernels up on a small n


def measure(backend: str, n: int, w: int, heads: int, dim: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from graphattn.ops import window_attention

    def make(n):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(n, heads, dim, generator=g, requires_grad=True) for _ in range(3))
        grad = torch.randn(n, heads, dim, generator=g)
        if backend == "banded":
            ptr = torch.tensor([0, n])
            return lambda: window_attention(q, k, v, ptr, ptr, w, w)[0].backward(grad)
        pos = torch.arange(n)
        mask = (pos.view(-1, 1) - pos.view(1, -1)).abs() <= w  # [n, n], True = may attend
        qt, kt, vt, gt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v, grad))  # (1, H, n, D)
        return lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask).backward(gt)

    make(min(n, WARMUP_N))()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = make(n)
    step()  # warm-up at full size
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # KiB on Linux
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_mib": peak / 1024}


def slope(xs, ys) -> float:
    """Least-squares exponent of y ~ x ** p on a log-log scale."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--w", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        backend, n = args.one[0], int(args.one[1])
        print(json.dumps(measure(backend, n, args.w, args.heads, args.dim, args.repeats)))
        return

    def run(backend, n):
        cmd = [sys.executable, __file__, "--one", backend, str(n), "--repeats", str(args.repeats),
               "--w", str(args.w), "--heads", str(args.heads), "--dim", str(args.dim)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    import torch

    print(f"window({args.w}), H={args.heads}, head_dim={args.dim}, float32, forward + backward, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads")
    print("| n | banded (s) | SDPA + band mask (s) | speed-up | banded (MiB) | SDPA (MiB) "
          "| memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    banded = {}
    for n in BANDED_NS:
        banded[n] = b = run("banded", n)
        row = f"| {n:,} | {b['seconds']:.3f} | "
        if n in SDPA_NS:
            s = run("sdpa", n)
            row += (f"{s['seconds']:.3f} | {s['seconds'] / b['seconds']:.1f}x | "
                    f"{b['peak_mib']:.0f} | {s['peak_mib']:.0f} | "
                    f"{s['peak_mib'] / max(b['peak_mib'], 1e-9):.1f}x |")
        else:
            row += f"- | - | {b['peak_mib']:.0f} | - | - |"
        print(row, flush=True)
    ns = BANDED_NS
    print(f"banded log-log exponent over n = {ns}: time "
          f"{slope(ns, [banded[n]['seconds'] for n in ns]):.2f}, peak memory "
          f"{slope(ns, [banded[n]['peak_mib'] for n in ns]):.2f}")


if __name__ == "__main__":
    main()
