"""``graphattn train``, ``translate`` and ``evaluate``: sequence models on text."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from graphattn.cli.common import set_threads

__all__ = ["register"]


def register(sub) -> None:
    """Add the text subcommands to the ``graphattn`` parser's subparsers."""
    _add_train(sub)
    p = sub.add_parser("translate", help="translate sentences with a trained model",
                       description="Translate the given sentences, or stdin one sentence a line.")
    p.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin)")
    _add_decoding(p)
    p.set_defaults(func=_translate, parser=p)
    p = sub.add_parser("evaluate", help="BLEU and exact match of a trained model",
                       description="Score a checkpoint on its task's test split, or on the given files.")
    p.add_argument("--src", metavar="FILE", help="test source file (default: the task's test split)")
    p.add_argument("--tgt", metavar="FILE", help="test target file")
    _add_decoding(p)
    p.set_defaults(func=_evaluate, parser=p)


def _add_train(sub) -> None:
    from graphattn.text.config import PRECISIONS, TASKS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a translation model",
                       description="Train a Seq2Seq model; every flag but --threads is one field of "
                                   "graphattn.text.TrainConfig.")
    g = p.add_argument_group("data")
    g.add_argument("--task", default=d.task, help=f"built-in task, one of {list(TASKS)} (default: %(default)s)")
    g.add_argument("--src", default=d.src, metavar="FILE", help="parallel text: source side, one sentence a line")
    g.add_argument("--tgt", default=d.tgt, metavar="FILE", help="parallel text: target side")
    g.add_argument("--valid-src", default=d.valid_src, metavar="FILE", help="validation source (default: split off)")
    g.add_argument("--valid-tgt", default=d.valid_tgt, metavar="FILE", help="validation target")
    g.add_argument("--valid-fraction", type=float, default=d.valid_fraction,
                   help="share of --src/--tgt held out for validation (default: %(default)s)")
    g.add_argument("--train-size", type=int, default=d.train_size, help="numbers task: training pairs (default: %(default)s)")
    g.add_argument("--valid-size", type=int, default=d.valid_size, help="numbers task: validation pairs (default: %(default)s)")
    g.add_argument("--test-size", type=int, default=d.test_size, help="numbers task: test pairs (default: %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--encoder-pattern", default=d.encoder_pattern, metavar="SPEC",
                   help="encoder self-attention pattern: dense, window:16, block:8, ... (default: %(default)s)")
    g.add_argument("--decoder-pattern", default=d.decoder_pattern, metavar="SPEC",
                   help="decoder self-attention pattern: causal, causal&window:16 (default: %(default)s)")
    g.add_argument("--d-model", type=int, default=d.d_model, help="model width (default: %(default)s)")
    g.add_argument("--nhead", type=int, default=d.nhead, help="attention heads (default: %(default)s)")
    g.add_argument("--layers", type=int, default=d.layers, help="encoder and decoder layers each (default: %(default)s)")
    g.add_argument("--ff", type=int, default=d.ff, help="feed-forward width (default: %(default)s)")
    g.add_argument("--dropout", type=float, default=d.dropout, help="dropout (default: %(default)s)")
    g.add_argument("--reference-torch", action="store_true", help="torch.nn.Transformer layers instead of graph layers")
    g = p.add_argument_group("optimisation")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="(default: %(default)s)")
    g.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    g.add_argument("--time-limit", type=float, default=d.time_limit, metavar="SECONDS",
                   help="also stop after this much training time (default: no limit)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="sentence pairs a batch, per process and micro-batch (default: 128)")
    g.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help="padded tokens a batch per process and micro-batch, instead of or besides --batch-size")
    g.add_argument("--accumulate", type=int, default=d.accumulate, metavar="K",
                   help="sum the gradients of K micro-batches before each step (default: %(default)s)")
    g.add_argument("--lr-factor", type=float, default=d.lr_factor, help="Noam schedule factor (default: %(default)s)")
    g.add_argument("--warmup", type=int, default=d.warmup, help="Noam warm-up steps (default: %(default)s)")
    g.add_argument("--clip-norm", type=float, default=d.clip_norm, help="gradient norm clipping, 0 = off (default: %(default)s)")
    g.add_argument("--scheduled-sampling", type=float, default=d.scheduled_sampling, metavar="P",
                   help="share of decoder inputs taken from the model's predictions, growing to P (default: %(default)s)")
    g = p.add_argument_group("run")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validations (default: %(default)s)")
    g.add_argument("--max-len", type=int, default=d.max_len, help="most tokens generated a sentence (default: %(default)s)")
    g.add_argument("--out", default=d.out, metavar="DIR", help="checkpoints, log and plots (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue exactly from DIR/last.pt")
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"),
                   help="cuda: the LOCAL_RANK-th GPU; auto: a GPU if there is one (default: %(default)s)")
    g.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="bf16: autocast in bfloat16, weights and optimizer in fp32 (default: %(default)s)")
    g.add_argument("--dist-timeout", type=float, default=d.dist_timeout, metavar="SECONDS",
                   help="under torchrun: fail when another process is silent this long (default: %(default)s)")
    p.set_defaults(func=_train, parser=p)


def _add_decoding(p) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint of graphattn train (best.pt)")
    p.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=None, help="most tokens generated (default: the training run's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")


def _train(args: argparse.Namespace) -> int:
    from graphattn.text.config import TrainConfig
    from graphattn.text.train import train

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    set_threads(args.threads)
    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for all
        return 0
    print(f"{result.step} steps ({result.train_seconds:.0f} s, {result.tokens_per_s:,.0f} tokens/s, "
          f"stopped by {result.stopped_by}); best validation BLEU {result.best_bleu:.2f}; "
          f"checkpoint {result.paths['best']}")
    return 0


def _load(args: argparse.Namespace):
    from graphattn.text.config import load_model

    if args.beam < 1 or (args.max_len is not None and args.max_len < 1):
        raise ValueError(f"--beam and --max-len must be >= 1, got {args.beam} and {args.max_len}")
    set_threads(args.threads)
    model, src_vocab, tgt_vocab, config = load_model(args.checkpoint)
    return model, src_vocab, tgt_vocab, config, args.max_len or config.max_len


def _translate(args: argparse.Namespace) -> int:
    from graphattn.text.config import source_text
    from graphattn.text.evaluation import translate

    model, src_vocab, tgt_vocab, config, max_len = _load(args)
    lines = args.sentences or sys.stdin.read().splitlines()
    sentences = [source_text(config, line) for line in lines]
    for hyp in translate(model, src_vocab, tgt_vocab, sentences, max_len, args.beam):
        print(hyp)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from graphattn.text.config import source_text, task_test_pairs
    from graphattn.text.data import read_parallel
    from graphattn.text.evaluation import evaluate

    model, src_vocab, tgt_vocab, config, max_len = _load(args)
    if (args.src is None) != (args.tgt is None):
        raise ValueError("give --src and --tgt together")
    if args.src:
        pairs = [(source_text(config, s), t) for s, t in read_parallel(args.src, args.tgt)]
    else:
        pairs = task_test_pairs(config)
    what = f"{args.src} -> {args.tgt}" if args.src else f"the {config.task} test split"
    scores = evaluate(model, src_vocab, tgt_vocab, pairs, max_len, args.beam)
    print(f"BLEU {scores['bleu']:.2f}  exact match {scores['exact_match']:.2f}%  ({scores['n']} sentences, {what})")
    return 0
