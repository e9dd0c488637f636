"""A training step of graphattn's Transformer against torch.nn.Transformer, in one run.

Usage: python benchmarks/transformer.py [--quick]

Forward + backward of the whole encoder-decoder (d_model=256, nhead=8, 3+3 layers,
dim_feedforward=1024, dropout 0.1), median of several repeats after a warm-up, peak RSS growth of
a fresh process per configuration. Ratios are graphattn / torch (below 1 is better).

* dense: B=32, S=T=64, dense encoder and causal decoder vs nn.Transformer with a causal tgt_mask.
* window: B=1, S=T=2048, window(16) encoder and causal()&window(16) decoder vs nn.Transformer
  with the same bands as boolean masks (and a banded memory mask is not used: cross-attention is
  dense in both).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(kind: str, impl: str, repeats: int) -> dict:
    import torch
    from torch import nn

    from graphattn import patterns
    from graphattn.nn import Transformer

    torch.manual_seed(0)
    d, heads, layers, ff = 256, 8, 3, 1024
    batch, length = (32, 64) if kind == "dense" else (1, 2048)
    w = 16
    src = torch.randn(batch, length, d)
    tgt = torch.randn(batch, length, d)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ref = nn.Transformer(d, heads, layers, layers, ff, 0.1, batch_first=True)
    if impl == "graphattn":
        kwargs = {}
        if kind == "window":
            kwargs = dict(encoder_pattern=patterns.window(w), decoder_pattern=patterns.causal() & patterns.window(w))
        model = Transformer.from_torch(ref, **kwargs)
        del ref
        fn = lambda: model(src, tgt)  # noqa: E731
    else:
        model = ref
        idx = torch.arange(length)
        diff = idx.view(-1, 1) - idx.view(1, -1)
        tgt_mask = diff < 0 if kind == "dense" else (diff < 0) | (diff > w)  # True = blocked
        src_mask = None if kind == "dense" else diff.abs() > w
        fn = lambda: model(src, tgt, src_mask=src_mask, tgt_mask=tgt_mask)  # noqa: E731
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        fn().square().mean().backward()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"seconds": times[len(times) // 2], "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]))))
        return
    repeats = 3 if args.quick else 5
    print("| training step | graphattn (s) | nn.Transformer (s) | time ratio | graphattn peak (MiB) | torch peak (MiB) | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, label in [("dense", "dense, B=32 S=T=64"), ("window", "window(16), B=1 S=T=2048")]:
        res = {}
        for impl in ("graphattn", "torch"):
            out = subprocess.run([sys.executable, __file__, "--one", kind, impl, str(repeats)], capture_output=True, text=True, check=True)
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        g, t = res["graphattn"], res["torch"]
        print(f"| {label} | {g['seconds']:.3f} | {t['seconds']:.3f} | {g['seconds'] / t['seconds']:.2f} | "
              f"{g['peak_mib']:.0f} | {t['peak_mib']:.0f} | {g['peak_mib'] / max(t['peak_mib'], 1):.2f} |", flush=True)


if __name__ == "__main__":
    main()
