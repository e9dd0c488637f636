"""``graphattn train``, ``translate``, ``evaluate`` and ``generate``: sequence models on text.

The library's warnings about data (unknown tokens, cut sentences, empty translations) reach
the user through logging, one line each (:func:`graphattn.cli.common.setup_logging`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from types import SimpleNamespace

from graphattn.cli.common import set_threads

__all__ = ["register"]

logger = logging.getLogger("graphattn.cli")


def register(sub) -> None:
    """Add the text subcommands to the ``graphattn`` parser's subparsers."""
    _mark_defaults(_add_train(sub))
    p = sub.add_parser("translate", help="translate sentences with a trained model",
                       description="Translate the given sentences, or stdin one sentence a line.")
    p.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin)")
    _add_decoding(p)
    p.set_defaults(func=_translate, parser=p)
    p = sub.add_parser("evaluate", help="BLEU and exact match (or perplexity) of a trained model",
                       description="Score a translation checkpoint on its task's test splits or on the given "
                                   "files, or a language model's perplexity on text files.")
    p.add_argument("--src", metavar="FILE", help="test source file (default: the task's test splits)")
    p.add_argument("--tgt", metavar="FILE", help="test target file")
    p.add_argument("--text", nargs="+", metavar="FILE", help="language model: text files to score")
    _add_decoding(p)
    p.set_defaults(func=_evaluate, parser=p)
    p = sub.add_parser("generate", help="sample text from a trained language model",
                       description="Continue each prompt (or each line of stdin) with a language model of "
                                   "graphattn train --task lm.")
    p.add_argument("prompts", nargs="*", help="text to continue (default: read stdin; '' starts a new document)")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint of graphattn train --task lm")
    p.add_argument("--max-new-tokens", type=int, default=200, help="most tokens added (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the K most probable tokens")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: random)")
    p.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (torch.set_num_threads; default: torch's choice)")
    p.set_defaults(func=_generate, parser=p)


def _add_train(sub) -> argparse.ArgumentParser:
    from graphattn.nn.causal_lm import POSITIONALS
    from graphattn.text.config import TEXT_TASKS, TOKENIZERS, TrainConfig

    d = SimpleNamespace(**TrainConfig().to_flat())  # the defaults, by the flags' (flat) names
    p = sub.add_parser("train", help="train a translation model or a language model",
                       description="Train a Seq2Seq translation model (the numbers task, or --src/--tgt files) "
                                   "or a CausalLM language model (--task lm --text FILE ...); every flag but "
                                   "--threads is one field of graphattn.text.TrainConfig (by its flat name, "
                                   "e.g. --d-model is model.d_model).")
    g = p.add_argument_group("data")
    g.add_argument("--task", default=d.task, help=f"one of {list(TEXT_TASKS)} (default: %(default)s)")
    g.add_argument("--src", default=d.src, metavar="FILE", help="parallel text: source side, one sentence a line")
    g.add_argument("--tgt", default=d.tgt, metavar="FILE", help="parallel text: target side")
    g.add_argument("--valid-src", default=d.valid_src, metavar="FILE", help="validation source (default: split off)")
    g.add_argument("--valid-tgt", default=d.valid_tgt, metavar="FILE", help="validation target")
    g.add_argument("--text", nargs="+", default=d.text, metavar="FILE",
                   help="--task lm: text files to learn, one document each")
    g.add_argument("--valid-text", nargs="+", default=d.valid_text, metavar="FILE",
                   help="--task lm: validation text files (default: documents split off --text)")
    g.add_argument("--valid-fraction", type=float, default=d.valid_fraction,
                   help="share of --src/--tgt (or of --text's documents) held out for validation (default: %(default)s)")
    g.add_argument("--train-size", type=int, default=d.train_size, help="numbers task: training pairs (default: %(default)s)")
    g.add_argument("--valid-size", type=int, default=d.valid_size, help="numbers task: validation pairs (default: %(default)s)")
    g.add_argument("--test-size", type=int, default=d.test_size,
                   help="numbers task: test pairs, uniform and round each (default: %(default)s)")
    g.add_argument("--tokenizer", default=d.tokenizer, choices=TOKENIZERS,
                   help="trained on the training text; auto: word for the numbers task, else bpe (default: %(default)s)")
    g.add_argument("--vocab-size", type=int, default=d.vocab_size,
                   help="most tokens a tokenizer holds (default: bpe/unigram 8000, with BPE merges of pairs "
                        "seen in 2%% of the lines at least; word/char: every token)")
    g.add_argument("--shared-vocab", action="store_true", help="one tokenizer for source and target")
    g.add_argument("--min-frequency", type=int, default=d.min_frequency,
                   help="bpe: merge only pairs seen this often (default: 2%% of the lines, at least 2; "
                        "real text wants 2)")
    g = p.add_argument_group("model")
    g.add_argument("--encoder-pattern", default=d.encoder_pattern, metavar="SPEC",
                   help="encoder self-attention pattern: dense, window:16, block:8, ... (default: %(default)s)")
    g.add_argument("--decoder-pattern", default=d.decoder_pattern, metavar="SPEC",
                   help="decoder (or language model) self-attention: causal, causal&window:16 (default: %(default)s)")
    g.add_argument("--positional", default=d.positional, choices=POSITIONALS,
                   help="--task lm: positions as sinusoids or as a relative bias (default: %(default)s)")
    g.add_argument("--context", type=int, default=d.context, help="--task lm: tokens a training sequence (default: %(default)s)")
    g.add_argument("--d-model", type=int, default=d.d_model, help="model width (default: %(default)s)")
    g.add_argument("--num-heads", "--nhead", dest="num_heads", type=int, default=d.num_heads,
                   help="attention heads (--nhead: the same flag, by torch's name) (default: %(default)s)")
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
                   help="pairs (lm: sequences) a batch, per process and micro-batch (default: 128, lm 16)")
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
    _add_run_flags(g, d)
    p.set_defaults(func=_train, parser=p)
    return p


def _add_run_flags(g, d) -> None:
    """The "run" group of the train flags: validation, output, resume, threads, device."""
    from graphattn.text.config import PRECISIONS

    g.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validations (default: %(default)s)")
    _add_validation_bounds(g, d)
    g.add_argument("--max-len", type=int, default=d.max_len,
                   help="longest sentence in tokens: cut for training, most generated (default: %(default)s)")
    g.add_argument("--out", default=d.out, metavar="DIR", help="checkpoints, log and plots (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    g.add_argument("--resume", action="store_true", help="continue exactly from DIR/last.pt (flags that may "
                   "change: --steps --time-limit --eval-every --threads --accumulate --device --precision --dist-timeout)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in DIR (its files stay until the new run's first checkpoint)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch's intra-op threads (torch.set_num_threads; default: torch's choice)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"),
                   help="cuda: the LOCAL_RANK-th GPU; auto: a GPU if there is one (default: %(default)s)")
    g.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="bf16: autocast in bfloat16, weights and optimizer in fp32 (default: %(default)s)")
    g.add_argument("--dist-timeout", type=float, default=d.dist_timeout, metavar="SECONDS",
                   help="under torchrun: fail when another process is silent this long (default: %(default)s)")


def _mark_defaults(p) -> None:
    """Wrap the train flags' defaults, so that _train can tell a flag given from one left alone
    (--resume refuses the first when it differs from the checkpoint, and keeps the checkpoint's
    value for the second)."""
    from graphattn.text.config import FIELD_ROLES

    p.set_defaults(**{name: _Default(p.get_default(name)) for name in FIELD_ROLES})


class _Default:
    """A flag's default value, marked as not given on the command line."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:  # what %(default)s shows in --help
        return str(self.value)


def _add_validation_bounds(g, d) -> None:
    """Flags that bound what validation costs inside a time budget."""
    g.add_argument("--eval-seconds", type=float, default=d.eval_seconds, metavar="SECONDS",
                   help="also validate when this much time passed since the last validation")
    g.add_argument("--valid-subset", type=int, default=d.valid_subset, metavar="N",
                   help="translation: validate during training on the first N validation pairs (default: all)")


def _add_decoding(p) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint of graphattn train (best.pt)")
    p.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=None, help="most tokens generated (default: the training run's)")
    p.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (torch.set_num_threads; default: torch's choice)")


def _train(args: argparse.Namespace) -> int:
    from graphattn.text.config import FIELD_ROLES, TrainConfig
    from graphattn.text.train import train

    values = {name: getattr(args, name) for name in FIELD_ROLES}
    given = [name for name, value in values.items() if not isinstance(value, _Default)]
    config = TrainConfig.from_flat({name: getattr(value, "value", value) for name, value in values.items()})
    set_threads(args.threads)
    result = train(config, given)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for all
        return 0
    best = f"perplexity {result.best:.3f}" if result.metric == "perplexity" else f"BLEU {result.best:.2f}"
    print(f"{result.step} steps ({result.train_seconds:.0f} s, {result.tokens_per_s:,.0f} tokens/s, "
          f"stopped by {result.stopped_by}); best validation {best}; checkpoint {result.paths['best']}")
    return 0


def _load(args: argparse.Namespace, lm: bool = False):
    from graphattn.text.build import load_model

    set_threads(args.threads)
    model, src_tok, tgt_tok, config = load_model(args.checkpoint)
    if lm != (config.kind == "lm"):
        use = "graphattn generate or evaluate --text" if config.kind == "lm" else "graphattn translate or evaluate"
        kind = "a language model" if config.kind == "lm" else "a translation model"
        raise ValueError(f"{args.checkpoint!r} holds {kind}: use {use}")
    return model, src_tok, tgt_tok, config


def _decoding_args(args: argparse.Namespace, config) -> int:
    if args.beam < 1 or (args.max_len is not None and args.max_len < 2):
        raise ValueError(f"--beam must be >= 1 and --max-len >= 2, got {args.beam} and {args.max_len}")
    return args.max_len or config.data.max_len


def _warn_empty(empty: int, total: int) -> None:
    from graphattn.text.diagnostics import empty_warning

    message = empty_warning(empty, total)
    if message:
        logger.warning("%s", message)


def _translate(args: argparse.Namespace) -> int:
    from graphattn.text.build import source_text
    from graphattn.text.evaluation import translate

    model, src_tok, tgt_tok, config = _load(args)
    max_len = _decoding_args(args, config)
    lines = args.sentences or sys.stdin.read().splitlines()
    sentences = [source_text(config, line) for line in lines]
    hyps = translate(model, src_tok, tgt_tok, sentences, max_len, args.beam)
    for hyp in hyps:
        print(hyp)
    asked = [h for s, h in zip(sentences, hyps) if s.strip()]  # an empty line's translation is empty by rule
    _warn_empty(sum(not h.strip() for h in asked), len(asked))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from graphattn.text.build import load_model, source_text, task_test_pairs
    from graphattn.text.data import read_parallel
    from graphattn.text.evaluation import translation_scores

    set_threads(args.threads)
    model, src_tok, tgt_tok, config = load_model(args.checkpoint)
    if config.kind == "lm" or args.text:
        return _evaluate_lm(args, model, tgt_tok, config)
    max_len = _decoding_args(args, config)
    if (args.src is None) != (args.tgt is None):
        raise ValueError("give --src and --tgt together")
    if args.src:
        sets = {f"{args.src} -> {args.tgt}": [(source_text(config, s), t) for s, t in read_parallel(args.src, args.tgt)]}
    else:
        task = config.data.task
        sets = {f"the {task} test split": task_test_pairs(config, "test"),
                f"the {task} round-number test split": task_test_pairs(config, "test_round")}
    for what, pairs in sets.items():
        scores = translation_scores(model, src_tok, tgt_tok, pairs, max_len, args.beam)
        unit = "" if scores["bleu_tokenize"] == "13a" else f" ({scores['bleu_tokenize']})"
        print(f"BLEU {scores['bleu']:.2f}{unit}  exact match {scores['exact_match']:.2f}%  ({scores['n']} sentences, {what})")
        _warn_empty(scores["empty"], scores["n"])
    return 0


def _evaluate_lm(args: argparse.Namespace, model, tokenizer, config) -> int:
    from graphattn.text.lm import LMDataset, perplexity, read_documents

    if config.kind != "lm":
        raise ValueError(f"{args.checkpoint!r} holds a translation model: --text scores language models")
    if not args.text or args.src or args.tgt:
        raise ValueError("a language model is scored on text files: give --text FILE ... (not --src/--tgt)")
    scores = perplexity(model, LMDataset(read_documents(args.text), tokenizer, config.data.context))
    print(f"perplexity {scores['perplexity']:.3f}  ({scores['nll']:.4f} nats a token, {scores['tokens']} tokens, "
          f"{len(args.text)} file(s))")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from graphattn.text.lm import generate_text

    model, _, tokenizer, _ = _load(args, lm=True)
    prompts = args.prompts if args.prompts else sys.stdin.read().splitlines()
    if not prompts:
        raise ValueError("no prompt: give prompts as arguments or one a line on stdin (an empty line, or '', "
                         "starts a new document)")
    for text in generate_text(model, tokenizer, prompts, args.max_new_tokens, args.temperature, args.top_k,
                              args.top_p, args.seed):
        print(text)
    return 0
