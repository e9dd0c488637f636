"""Cached (incremental) against uncached greedy and beam decoding of 128 tokens, and the size of the
decoder's key/value cache against the decoded length under ``causal`` and ``causal&window:w``.

Usage: python benchmarks/decode.py [--tokens 128] [--repeats 3] [--batch 8] [--pattern causal] [--window 16]

An untrained Seq2Seq whose EOS is suppressed, so every sequence runs the full length; the
two paths must produce the same tokens, which this script checks before timing. One thread.
The cache table decodes n tokens with the cache that ``greedy_decode(max_len=n)`` allocates and
counts its self-attention keys and values (the memory's cross-attention keys, projected once,
are the same for both patterns and listed apart): O(n) under ``causal``, O(w) under the window.
"""
from __future__ import annotations

import argparse

import torch

from graphattn import patterns as P
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.model import Seq2Seq
from graphattn.utils.bench import median_seconds


def make_model(pattern: P.Pattern) -> Seq2Seq:
    torch.manual_seed(0)
    model = Seq2Seq(64, 64, d_model=256, num_heads=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=1024,
                    decoder_pattern=pattern).eval()
    with torch.no_grad():
        model.generator.bias[model.eos_id] = -1e4  # never stop early: decode the full length
    return model


def speed(model: Seq2Seq, src, ptr, args) -> None:
    print(f"| decoding, {args.tokens} tokens, batch {args.batch}, {args.pattern} | cached (s) | uncached (s) | speed-up |")
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


@torch.no_grad()
def cache_size(model: Seq2Seq, src, ptr, length: int):
    """The decoder's cache after ``length`` greedy steps, allocated as greedy_decode(max_len=length) does."""
    memory = model.encode(src, ptr)
    cache = model.transformer.start_decoding(memory, ptr, length)
    tokens = torch.full((ptr.numel() - 1,), model.bos_id)
    for t in range(length):
        tokens = model.log_probs(model.transformer.decode_step(model.embed_step(tokens, t), cache)).argmax(-1)
    return cache


def sizes(src, ptr, args) -> None:
    window = f"causal&window:{args.window}"
    models = {name: make_model(P.parse(name)) for name in ("causal", window)}
    lengths = sorted({n for n in (16, 32, 64, 128, 256, args.tokens) if n <= max(args.tokens, 16)})
    print(f"\n| decoded tokens, batch {args.batch} | causal: cache elements | causal (KiB) | {window}: elements "
          f"| {window} (KiB) | memory keys, both (KiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in lengths:
        full, ring = (cache_size(models[name], src, ptr, n) for name in ("causal", window))
        count = [sum(t.numel() for t in c.keys + c.values) for c in (full, ring)]
        print(f"| {n} | {count[0]} | {full.nbytes() / 1024:.0f} | {count[1]} | {ring.nbytes() / 1024:.0f} "
              f"| {full.memory_nbytes() / 1024:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pattern", default="causal", help="decoder pattern of the timing table")
    parser.add_argument("--window", type=int, default=16, help="w of causal&window:w in the cache table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = make_model(P.parse(args.pattern))  # seeds 0; the sources are drawn after it
    lengths = torch.randint(10, 30, (args.batch,))
    src = torch.randint(3, 64, (int(lengths.sum()),))
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    speed(model, src, ptr, args)
    sizes(src, ptr, args)


if __name__ == "__main__":
    main()
