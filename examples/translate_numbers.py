"""Train a graph-attention Transformer to translate English number words into French, on a CPU.

Usage: python examples/translate_numbers.py [--reference-torch] [--time-limit 240] [--steps 600] [--out DIR]

Trains on 2 % of the numbers 0..999 999 (``graphattn.text.numbers.numbers_task``: round numbers
and their neighbours are drawn more often than uniformly, since "eighty thousand" or "one
thousand and one" take forms that uniform draws almost never show), stops at a step limit or a
wall-clock limit (whichever comes first; the whole demo stays within ~5 minutes on 2 CPU cores),
then translates two held-out test sets with the best checkpoint by validation BLEU: 1 000
uniformly drawn numbers and 1 000 numbers with a round thousands or units part, none seen in
training. It prints BLEU and exact match of both, translations of showcase numbers never seen in
training and where the plots went. Word tokens (``--tokenizer word``, what ``auto`` picks for this
task). ``--reference-torch`` trains the same model with ``torch.nn.Transformer`` layers in place
of the graph layers, for a side-by-side comparison of quality and tokens/s.
"""
from __future__ import annotations

import argparse
import time

import torch

from graphattn.cli import setup_logging
from graphattn.text import TrainConfig
from graphattn.text.evaluation import translate, translation_scores
from graphattn.text.numbers import SHOWCASE, number_pairs, number_splits
from graphattn.text.train import train


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-torch", action="store_true", help="torch.nn.Transformer layers")
    parser.add_argument("--time-limit", type=float, default=240.0,
                        help="seconds of training at most; on 2 idle cores the 600 steps take ~180 s (default: 240)")
    parser.add_argument("--steps", type=int, default=600, help="step limit (default: 600)")
    # One thread: d_model=128 matrices gain little from a second one, and on two shared cores a
    # second OpenMP thread waiting at barriers made steps several times slower in our runs.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/numbers[-torch])")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    setup_logging()  # validation scores as training goes
    torch.set_num_threads(args.threads)
    config = TrainConfig.from_flat(
        d_model=128, num_heads=4, layers=3, ff=512, dropout=0.1, batch_size=128, lr_factor=0.7, warmup=200,
        steps=args.steps, time_limit=args.time_limit, eval_every=100, seed=args.seed,
        reference_torch=args.reference_torch, progress=args.progress,
        out=args.out or ("runs/numbers-torch" if args.reference_torch else "runs/numbers"),
        overwrite=True,  # the demo's own folder: running it again replaces its last run
    )
    net = config.model
    kind = "torch.nn.Transformer layers" if net.reference_torch else "graph attention layers"
    print(f"Training a {net.layers}+{net.layers}-layer, d_model={net.d_model} Transformer with {kind} "
          f"on EN->FR number words (at most {config.optim.steps} steps or {config.run.time_limit:.0f} s)...")
    result = train(config)
    print(f"\n{result.step} steps in {result.train_seconds:.0f} s of training (stopped by {result.stopped_by}), "
          f"{result.tokens_per_s:,.0f} tokens/s")

    splits = number_splits(config.run.seed, train_size=config.data.train_size, valid_size=config.data.valid_size,
                           test_size=config.data.test_size)
    print(f"Best checkpoint by validation BLEU ({result.best_bleu:.2f}), on numbers never seen in training:")
    for name, what in (("test", "uniformly drawn numbers"), ("test_round", "numbers with a round part")):
        scores = translation_scores(result.model, result.src_tokenizer, result.tgt_tokenizer, number_pairs(splits[name]),
                          config.data.max_len)
        print(f"  {scores['n']} {what}: BLEU {scores['bleu']:.2f}, exact match {scores['exact_match']:.1f}%")

    # Numbers that show the irregular forms (quatre-vingt mille, mille un, cent / cents, et un);
    # the task holds them out of every split.
    shown = number_pairs(SHOWCASE)
    outputs = translate(result.model, result.src_tokenizer, result.tgt_tokenizer, [en for en, _ in shown],
                        config.data.max_len)
    print(f"\nShowcase numbers never seen in training ({sum(h == fr for (_, fr), h in zip(shown, outputs))} of "
          f"{len(shown)} right):")
    for (en, fr), hyp in zip(shown, outputs):
        mark = "ok" if hyp == fr else f"expected: {fr}"
        print(f"  {en}\n    -> {hyp}   [{mark}]")
    print(f"\nPlots: {result.paths['curves']} (training curves), {result.paths['attention']} (cross-attention)")
    print(f"Checkpoint: {result.paths['best']}  (try: graphattn translate --checkpoint {result.paths['best']} "
          f"\"four hundred and twelve\")")
    print(f"Total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
