"""Decoder-only language models: graphattn's CausalLM against what a user would otherwise write.

Usage: python benchmarks/lm.py [--quick] [--out runs/bench/lm]

One torch thread. Both sides of a ratio are timed in one fresh process, interleaved (medians of
several repeats after a warm-up each), so that a busy machine slows both alike; peak memory is
the growth of the peak RSS of a fresh process that runs the workload once (every temporary
included). Ratios are graphattn / baseline: below 1 is better.

* train: a training step (forward, backward, Adam) of CausalLM (``causal``: SDPA) against the
  same model written with ``torch.nn.TransformerEncoder`` and a causal mask (same weights,
  embedding, sinusoidal positions, pre-norm GELU blocks, tied output layer). d_model 256, 8
  heads, 4 layers, vocabulary 8000, B=16 x T=256.
* window: the same step at T=8192 (B=1) under ``causal&window:128`` (the window backend)
  against ``nn.TransformerEncoder`` with the band as a boolean mask (SDPA with a mask), both
  without dropout (with it, SDPA on a CPU keeps every layer's [8, 8192, 8192] weights: the
  baseline went past 12 GB).
* generate: 512 tokens after a 16-token prompt, greedy, cached (O(t) a token) against uncached
  (the whole sequence again each token); the same tokens are checked before timing.
* cache: 4096 tokens generated under ``causal&window:128`` with the rolling cache (the last 129
  positions) against the full cache (every position), same tokens; cache bytes and peak memory.

The table is printed and written to ``OUT/lm.json`` and ``OUT/lm.csv``.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

D, HEADS, LAYERS, FF, VOCAB = 256, 8, 4, 1024, 8000


def build(pattern: str, dropout: float = 0.1):
    import torch

    from graphattn.nn import CausalLM

    torch.manual_seed(0)
    return CausalLM(VOCAB, D, HEADS, LAYERS, FF, dropout=dropout, pattern=pattern)


class TorchLM:
    """The same model with ``torch.nn.TransformerEncoder``: embedding * sqrt(d) + sinusoids,
    pre-norm GELU layers, final LayerNorm, output tied to the embedding."""

    def __init__(self, model):
        import torch
        from torch import nn

        layer = nn.TransformerEncoderLayer(D, HEADS, FF, model.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        for theirs, mine in zip(self.encoder.layers, model.layers):
            theirs.load_state_dict(mine.state_dict())
        self.embed, self.norm = model.embed, model.norm  # shared modules: the same parameters
        self.modules = nn.ModuleList([self.encoder, self.embed, self.norm])
        self.torch = torch

    def parameters(self):
        return self.modules.parameters()

    def __call__(self, tokens, mask, is_causal):
        from graphattn.nn import positional_encoding

        x = self.embed(tokens) * math.sqrt(D) + positional_encoding(tokens.size(1), D)
        x = self.encoder(x, mask=mask, is_causal=is_causal)
        return self.norm(x) @ self.embed.weight.T


def workload(kind: str, impl: str):
    """A callable that runs one measured unit of ``kind`` for ``impl``, and facts about it."""
    import torch
    import torch.nn.functional as F

    if kind in ("generate", "cache"):
        model = build("causal" if kind == "generate" else "causal&window:128").eval()
        prompt = torch.randint(0, VOCAB, (16,), generator=torch.Generator().manual_seed(1))
        new = 512 if kind == "generate" else 4096
        options = {"cached": {}, "uncached": {"use_cache": False}, "rolling": {}, "full": {"rolling_cache": False}}[impl]
        extra = {}
        if kind == "cache":
            extra["cache_mib"] = model.init_cache(1, 16 + new, rolling=impl == "rolling").nbytes() / 2**20
        return (lambda: model.generate(prompt, new, temperature=0, **options)), extra
    batch, length = (16, 256) if kind == "train" else (1, 8192)
    # No dropout at 8k: with it, SDPA on a CPU takes its math path, whose [8, 8192, 8192]
    # weights per layer took the baseline past 12 GB.
    model = build("causal", 0.1) if kind == "train" else build("causal&window:128", 0.0)
    model.train()
    tokens = torch.randint(0, VOCAB, (batch, length + 1), generator=torch.Generator().manual_seed(1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    if impl == "graphattn":
        forward, params = (lambda: model(x)), model.parameters()
    else:
        ref = TorchLM(model)
        pos = torch.arange(length)
        diff = pos.view(-1, 1) - pos.view(1, -1)  # query i - key j
        mask = diff < 0 if kind == "train" else (diff < 0) | (diff > 128)  # True = blocked
        forward, params = (lambda: ref(x, mask, kind == "train")), ref.parameters()
    optimizer = torch.optim.Adam(params, lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward().reshape(-1, VOCAB), y.reshape(-1)).backward()
        optimizer.step()

    return step, {}


def run_times(kind: str, impls: list, repeats: int) -> dict:
    """Median seconds of each implementation, measured interleaved in this one process (so a
    busy machine slows both alike) after a warm-up each; generated tokens must agree."""
    import statistics

    fns = {impl: workload(kind, impl)[0] for impl in impls}
    outputs = {impl: fn() for impl, fn in fns.items()}  # the warm-up
    if kind in ("generate", "cache") and not all(outputs[i].tolist() == outputs[impls[0]].tolist() for i in impls):
        raise RuntimeError(f"{kind}: {impls} generated different tokens")
    times = {impl: [] for impl in impls}
    for _ in range(repeats):
        for impl, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[impl].append(time.perf_counter() - start)
    return {impl: statistics.median(t) for impl, t in times.items()}


def run_memory(kind: str, impl: str) -> dict:
    """Peak RSS growth (MiB) of building and running the workload once, in this fresh process."""
    import resource

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn, extra = workload(kind, impl)
    fn()
    return {"peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, **extra}


def subprocess_json(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = [  # kind, label, graphattn side, baseline side
    ("train", "training step, causal, B=16 T=256 (vs nn.TransformerEncoder + causal mask)", "graphattn", "torch"),
    ("window", "training step, causal&window:128, B=1 T=8192 (vs nn.TransformerEncoder + band mask)", "graphattn", "torch"),
    ("generate", "generate 512 tokens, causal (cached vs uncached)", "cached", "uncached"),
    ("cache", "generate 4096 tokens, causal&window:128 (rolling vs full cache)", "rolling", "full"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", help="comma-separated rows to run: train, window, generate, cache (default: all)")
    parser.add_argument("--out", default="runs/bench/lm", help="where lm.json and lm.csv go")
    parser.add_argument("--times", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.times or args.memory:
        import torch

        torch.set_num_threads(1)
        out = run_times(args.times[0], args.times[1:3], int(args.times[3])) if args.times else run_memory(*args.memory)
        print(json.dumps(out))
        return
    from graphattn.utils.tables import markdown_table, write_rows

    rows = []
    for kind, label, mine, theirs in ROWS:
        if args.only and kind not in args.only.split(","):
            continue
        repeats = max(1, {"train": 5, "window": 3, "generate": 3, "cache": 2}[kind] // (2 if args.quick else 1))
        started = time.perf_counter()
        seconds = subprocess_json("--times", kind, mine, theirs, str(repeats))
        a, b = (subprocess_json("--memory", kind, impl) for impl in (mine, theirs))
        print(f"  {kind}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        rows.append({"benchmark": label, "graphattn (s)": seconds[mine], "baseline (s)": seconds[theirs],
                     "time ratio": seconds[mine] / seconds[theirs], "graphattn peak (MiB)": a["peak_mib"],
                     "baseline peak (MiB)": b["peak_mib"], "memory ratio": a["peak_mib"] / max(b["peak_mib"], 1e-9),
                     "cache (MiB)": f"{a['cache_mib']:.2f} / {b['cache_mib']:.2f}" if "cache_mib" in a else None})
    print("One torch thread; time = median of interleaved repeats after a warm-up, in one process; "
          "peak = growth of peak RSS of a fresh process running it once.")
    print(markdown_table(rows, list(rows[0])))
    json_path, _ = write_rows(rows, Path(args.out), "lm")
    print(f"written: {json_path} and lm.csv")


if __name__ == "__main__":
    main()
