"""Translate real captions: English -> German on Multi30k, on a CPU, within a time budget.

Usage: python examples/multi30k.py [--data DIR] [--time-limit 900] [--reference-torch] [--seed 0] [--out DIR]

Trains the recipe of ``graphattn.text.multi30k.recipe_config`` (why each choice:
docs/translation.md) on the 29,000 training pairs until the time limit, validating greedily on a
fixed subset of 200 validation pairs every two minutes and keeping the checkpoint with the best
validation BLEU. Then, with that checkpoint, it decodes the 1,000 test_2016_flickr sentences by
beam search (4 beams, GNMT length penalty 0.6) and prints sacreBLEU on the detokenised, cased
output with its signature, the full validation set's BLEU, a few sample translations, the share
of the budget validation took, and where the curves (curves.png) and a cross-attention plot
(attention.png) went. ``--reference-torch`` trains the same model with torch.nn.Transformer
layers, with the same data, tokenizers, loop and budget. The numbers also go to
``OUT/results.json`` (benchmarks/multi30k_reference.py reads them).

The same training run on the command line (graphattn train reads the .gz files as they are)::

    D=../shared/data/multi30k
    graphattn train --src $D/train.en.gz --tgt $D/train.de.gz --valid-src $D/val.en.gz --valid-tgt $D/val.de.gz \\
        --tokenizer bpe --vocab-size 4000 --min-frequency 2 --d-model 128 --num-heads 4 --layers 3 --ff 512 \\
        --max-tokens 2500 --lr-factor 0.25 --warmup 200 --max-len 64 --steps 1000000 --time-limit 900 \\
        --eval-every 1000000 --eval-seconds 120 --valid-subset 200 --threads 1 --out runs/multi30k
    graphattn evaluate --checkpoint runs/multi30k/best.pt --src $D/test_2016_flickr.en.gz \\
        --tgt $D/test_2016_flickr.de.gz --beam 4

The data: https://github.com/multi30k/dataset, data/task1/raw/ (the folder is --data, default
$GRAPHATTN_DATA/multi30k, else ../shared/data/multi30k beside the repository).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

from graphattn.cli import setup_logging
from graphattn.text.evaluation import translate, translation_scores
from graphattn.text.metrics import sacrebleu_score
from graphattn.text.multi30k import SOURCE, load_multi30k, multi30k_files, recipe_config
from graphattn.text.train import train


def default_data() -> Path:
    root = os.environ.get("GRAPHATTN_DATA")
    return Path(root) / "multi30k" if root else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="folder of the Multi30k .gz files")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds of training, validation included (default: 900)")
    parser.add_argument("--reference-torch", action="store_true", help="torch.nn.Transformer layers")
    parser.add_argument("--beam", type=int, default=4, help="beam size for the test set (default: 4)")
    parser.add_argument("--length-penalty", type=float, default=0.6, help="GNMT length penalty alpha (default: 0.6)")
    # One thread: two cores shared by several processes; a second OpenMP thread waiting at
    # barriers made steps slower, not faster, in our runs (docs/translation.md).
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="(default: cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default: runs/multi30k[-torch])")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override recipe fields by their flat names (those of graphattn train's flags: "
                             "TrainConfig.from_flat), e.g. d_model=128 (for the tuning runs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out (refused otherwise; its files stay until the first checkpoint)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser.parse_args()


def overrides(items: list) -> dict:
    """``{field: value}`` of ``--set FIELD=VALUE ...``: a value is read as JSON (numbers, true, null),
    else kept as a string; ``FIELD`` is a flat field name of TrainConfig (``d_model``, ``eval_seconds``)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def main() -> int:
    args = parse_args()
    setup_logging()
    torch.set_num_threads(args.threads)
    try:
        files = multi30k_files(args.data)
    except FileNotFoundError as e:
        print(f"{e}\n(pass the folder with --data; the files come from {SOURCE})", file=sys.stderr)
        return 2
    data = load_multi30k(args.data)  # checks the line counts before training starts
    out = args.out or ("runs/multi30k-torch" if args.reference_torch else "runs/multi30k")
    try:
        config = recipe_config(args.data, time_limit=args.time_limit, seed=args.seed, out=out, device=args.device,
                               reference_torch=args.reference_torch, progress=args.progress, overwrite=args.overwrite,
                               **overrides(args.set))
        net = config.model
        kind = "torch.nn.Transformer layers" if net.reference_torch else "graph attention layers"
        print(f"Training a {net.layers}+{net.layers}-layer, d_model={net.d_model} Transformer with {kind} on "
              f"Multi30k EN->DE ({len(data['train']):,} pairs) for {config.run.time_limit:.0f} s, "
              f"{args.threads} thread(s)...")
        result = train(config)
    except ValueError as e:  # a folder holding a run, or a bad --set value: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    loop = result.train_seconds + result.valid_seconds
    print(f"\n{result.step} steps, {result.tokens_per_s:,.0f} tokens/s; validation took {result.valid_seconds:.0f} s "
          f"of the {loop:.0f} s loop ({100 * result.valid_seconds / max(loop, 1e-9):.1f}%)")
    print(f"Best checkpoint by validation BLEU on {config.run.valid_subset or 'all'} pairs (greedy): {result.best_bleu:.2f}")

    model, src_tok, tgt_tok = result.model, result.src_tokenizer, result.tgt_tokenizer
    tic = time.perf_counter()
    valid = translation_scores(model, src_tok, tgt_tok, data["valid"], config.data.max_len)
    sources, references = [s for s, _ in data["test"]], [t for _, t in data["test"]]
    greedy = translate(model, src_tok, tgt_tok, sources, config.data.max_len)
    test_greedy, _ = sacrebleu_score(greedy, references)
    hyps = greedy if args.beam == 1 else translate(model, src_tok, tgt_tok, sources, config.data.max_len, args.beam,
                                                   length_penalty=args.length_penalty)
    test_bleu, signature = sacrebleu_score(hyps, references)
    decode_seconds = time.perf_counter() - tic
    print(f"Validation ({len(data['valid'])} pairs, greedy): BLEU {valid['bleu']:.2f}")
    print(f"Test 2016 ({len(references)} pairs), greedy: sacreBLEU {test_greedy:.2f}")
    print(f"Test 2016, beam {args.beam}, length penalty {args.length_penalty}: sacreBLEU {test_bleu:.2f}  "
          f"(detokenised, cased; signature {signature})")
    print("\nSample test translations:")
    for i in (0, 1, 2, 100, 500):
        print(f"  EN:  {sources[i]}\n  REF: {references[i]}\n  OUT: {hyps[i]}\n")
    peak_mb = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() and config.run.device != "cpu"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 20
    results = {"model": "torch" if config.model.reference_torch else "graphattn", "seed": config.run.seed,
               "time_limit": config.run.time_limit, "threads": args.threads, "steps": result.step,
               "tokens_per_s": result.tokens_per_s, "train_seconds": result.train_seconds,
               "valid_seconds": result.valid_seconds, "valid_bleu_subset": result.best_bleu,
               "valid_bleu": valid["bleu"], "test_bleu_greedy": test_greedy, "test_bleu": test_bleu,
               "signature": signature, "beam": args.beam, "length_penalty": args.length_penalty,
               "decode_seconds": decode_seconds, "peak_memory_mb": peak_mb, "overrides": overrides(args.set)}
    Path(config.run.out, "results.json").write_text(json.dumps(results, indent=1))
    print(f"Peak memory {peak_mb:.0f} MB. Curves: {result.paths['curves']}, cross-attention: "
          f"{result.paths['attention']}, log: {result.paths['log']}, numbers: {Path(config.run.out, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
