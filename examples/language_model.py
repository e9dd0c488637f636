"""Train small code language models on the Python standard library's own source files, on a CPU.

Usage: python examples/language_model.py [--time-limit 150] [--context 1024] [--window 128] [--out DIR]

Real text that every machine with Python has: the ``*.py`` files next to ``os.py`` (about 170
files, 4.7 MB), one document each, 5 % of the files held out for validation. A byte-level BPE
tokenizer is trained on the training files, then two decoder-only models that differ only in
their attention pattern train for the same wall-clock time through ``graphattn train``'s loop
(``TrainConfig.from_flat(task="lm")``) at a context of ``--context`` tokens:

* ``causal&window:W``: each position attends the ``W`` before it (the window backend, n*W work),
* ``causal``: each position attends all before it (SDPA, n^2 work).

It prints the validation perplexity of each (same tokenizer, same validation tokens), their
training speed, and samples of each continuing a few prompts. About 6 minutes on 2 CPU cores
with the defaults (one torch thread).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from graphattn.cli import setup_logging
from graphattn.text import TrainConfig
from graphattn.text.data import read_text
from graphattn.text.lm import generate_text, read_documents, split_documents
from graphattn.text.train import train

PROMPTS = ("def ", "import os\n\n\nclass ", "    for i in range(")


def stdlib_files() -> list[str]:
    """The standard library's top-level modules that are UTF-8 text (all of them, in practice)."""
    files = []
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        try:
            read_text(path)
        except ValueError:  # an empty file, or bytes that are not UTF-8: not a document to learn
            continue
        files.append(str(path))
    return files


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=150.0, help="seconds of training per model (default: 150)")
    parser.add_argument("--steps", type=int, default=2000, help="step limit per model (default: 2000)")
    parser.add_argument("--context", type=int, default=1024, help="tokens a training sequence (default: 1024)")
    parser.add_argument("--window", type=int, default=128, help="W of causal&window:W (default: 128)")
    parser.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary (default: 2048)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences a step (default: 8)")
    parser.add_argument("--lr-factor", type=float, default=1.0, help="Noam schedule factor (default: 1.0)")
    parser.add_argument("--patterns", default=None, help="comma-separated patterns (default: causal&window:W,causal)")
    parser.add_argument("--new-tokens", type=int, default=120, help="tokens sampled per prompt (default: 120)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", default="runs/lm", help="output directory (default: runs/lm)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    setup_logging()
    torch.set_num_threads(args.threads)
    files = stdlib_files()
    size = sum(Path(f).stat().st_size for f in files)
    print(f"{len(files)} source files of the Python standard library ({size / 1e6:.1f} MB) in "
          f"{Path(files[0]).parent}; context {args.context} tokens, {args.threads} torch thread(s)")
    results, outs = {}, {}
    patterns = args.patterns.split(",") if args.patterns else [f"causal&window:{args.window}", "causal"]
    for pattern in patterns:
        outs[pattern] = out = Path(args.out) / pattern.replace("&", "-").replace(":", "")
        config = TrainConfig.from_flat(task="lm", text=files, valid_fraction=0.05, tokenizer="bpe",
                                       vocab_size=args.vocab_size, context=args.context, decoder_pattern=pattern,
                                       d_model=128, num_heads=4, layers=3, ff=512, dropout=0.0,
                                       batch_size=args.batch_size, lr_factor=args.lr_factor, warmup=100,
                                       steps=args.steps, time_limit=args.time_limit, eval_every=100,
                                       progress=args.progress, out=str(out), overwrite=True)  # the example's own folder: a new run replaces it
        print(f"\nTraining with {pattern} (at most {config.optim.steps} steps or {config.run.time_limit:.0f} s)...")
        results[pattern] = result = train(config)
        print(f"{result.step} steps, {result.tokens_per_s:,.0f} tokens/s; validation perplexity "
              f"{result.valid['perplexity']:.2f} ({result.valid['tokens']:,} tokens), best {result.best:.2f}")
    runs = list(results.values())
    if any(r.tokenizer != runs[0].tokenizer for r in runs):
        raise RuntimeError("the runs trained different tokenizers: their perplexities do not compare")
    # Bits per byte of the validation text compare across tokenizers, as perplexities do not.
    valid_bytes = sum(len(d.encode("utf-8")) for d in split_documents(read_documents(files), 0.05, 0)[1])

    print("\n| pattern | steps | tokens/s | validation perplexity (best) | bits per byte |\n|---|---:|---:|---:|---:|")
    for pattern, r in results.items():
        bpb = r.valid["tokens"] * math.log(r.best) / (valid_bytes * math.log(2))
        print(f"| `{pattern}` | {r.step} | {r.tokens_per_s:,.0f} | {r.best:.2f} | {bpb:.2f} |")
    for pattern, r in results.items():
        print(f"\nSamples of `{pattern}` (temperature 0.8, top-p 0.95, seed 0):")
        for text in generate_text(r.model, r.tokenizer, PROMPTS, args.new_tokens, temperature=0.8, top_p=0.95, seed=0):
            print("-" * 60 + "\n" + text)
    print("-" * 60)
    print(f"\nCheckpoints and curves under {args.out}/ (try: graphattn generate --checkpoint "
          f"{next(iter(outs.values())) / 'best.pt'} 'def main():')")
    print(f"Total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
