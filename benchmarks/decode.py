"""Cached (incremental) against uncached greedy and beam decoding of 128 tokens.

Usage: python benchmarks/decode.py [--tokens 128] [--repeats 3]

An untrained Seq2Seq whose EOS is suppressed, so every sequence runs the full length; the
two paths must produce the same tokens, which this script checks before timing.
"""
from __future__ import annotations

import argparse

import torch

from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.model import Seq2Seq
from graphattn.utils.bench import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Seq2Seq(64, 64, d_model=256, nhead=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=1024).eval()
    with torch.no_grad():
        model.generator.bias[model.eos_id] = -1e4  # never stop early: decode the full length
    lengths = torch.randint(10, 30, (args.batch,))
    src = torch.randint(3, 64, (int(lengths.sum()),))
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])

    print(f"| decoding, {args.tokens} tokens, batch {args.batch} | cached (s) | uncached (s) | speed-up |")
    print("|---|---:|---:|---:|")
    for name, fn in [
        ("greedy", lambda cache: greedy_decode(model, src, ptr, max_len=args.tokens, use_cache=cache)),
        ("beam 4", lambda cache: beam_search(model, src, ptr, beam_size=4, max_len=args.tokens, use_cache=cache)),
    ]:
        cached, uncached = fn(True), fn(False)
        assert cached.tokens == uncached.tokens, "cached decoding must give the same tokens"
        assert all(len(t) == args.tokens for t in cached.tokens)
        t_cached = median_seconds(lambda: fn(True), args.repeats)
        t_uncached = median_seconds(lambda: fn(False), args.repeats)
        print(f"| {name} | {t_cached:.2f} | {t_uncached:.2f} | {t_uncached / t_cached:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
