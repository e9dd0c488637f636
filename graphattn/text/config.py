r"""The configuration of a text training run, the data it names and the model it builds.

``graphattn train`` maps its flags onto :class:`TrainConfig` one to one; a checkpoint stores the
config as a plain dict and the tokenizers as JSON strings, and :func:`load_model` rebuilds the
model from them. Two kinds of run share the fields: translation (the numbers task, or parallel
files ``src``/``tgt``) trains a :class:`~graphattn.text.model.Seq2Seq`, ``task="lm"`` trains a
:class:`~graphattn.nn.CausalLM` on the text files ``text``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from graphattn import patterns as P
from graphattn.nn import CausalLM
from graphattn.nn.causal_lm import POSITIONALS
from graphattn.text.checkpoint import load_checkpoint
from graphattn.text.data import read_parallel, split_pairs
from graphattn.text.lm import read_documents, split_documents
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.text.numbers import normalize, number_pairs, number_splits, numbers_task
from graphattn.text.tokenizer import KINDS, Tokenizer
from graphattn.utils.checks import check_file

__all__ = ["TrainConfig", "TASKS", "TOKENIZERS", "RUN_FIELDS", "RETIRED_FIELDS", "PRECISIONS", "check_config",
           "config_from_dict", "is_lm", "tokenizer_kind", "load_task", "task_test_pairs", "source_text",
           "build_tokenizers", "build_model", "checkpoint_tokenizers", "state_dict_mismatch", "load_model"]

TASKS = ("numbers-en-fr", "lm")
TOKENIZERS = ("auto",) + KINDS
# On --resume these come from the command line; everything else from the checkpoint's config.
RUN_FIELDS = ("steps", "time_limit", "out", "resume", "overwrite", "progress", "accumulate", "device", "precision",
              "dist_timeout")
#: fields of earlier versions, ignored when their checkpoints load
RETIRED_FIELDS = ("threads",)
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is one ``graphattn train`` flag.

    Process-wide settings (torch threads, logging) belong to the entry point, not to the run:
    ``graphattn train --threads`` sets them before calling :func:`~graphattn.text.train.train`.
    """

    task: str = "numbers-en-fr"  # built-in translation task (when src/tgt are not given), or "lm" (needs text)
    src: Optional[str] = None  # source side of a parallel text, one sentence a line
    tgt: Optional[str] = None  # target side: line i translates line i of src
    valid_src: Optional[str] = None  # validation source file (default: split off src/tgt)
    valid_tgt: Optional[str] = None  # validation target file
    text: Optional[list] = None  # lm: text files to learn, one document each
    valid_text: Optional[list] = None  # lm: validation text files (default: documents split off text)
    valid_fraction: float = 0.05  # share of src/tgt (or of text's documents) held out for validation
    train_size: int = 20_000  # numbers task: training pairs (at least its ~130 core numbers)
    valid_size: int = 500  # numbers task: validation pairs
    test_size: int = 1_000  # numbers task: test pairs, uniform and round (what `graphattn evaluate` scores)
    tokenizer: str = "auto"  # bpe, unigram, char or word, trained on the training text; auto: word for numbers, else bpe
    vocab_size: Optional[int] = None  # most tokens a tokenizer holds (4 specials included); default: bpe/unigram 8000 (BPE merges need 2% of the lines), word/char all
    shared_vocab: bool = False  # translation: one tokenizer for both sides, trained on both
    min_frequency: Optional[int] = None  # bpe: merge only pairs seen this often (default: 2% of the lines, at least 2)
    encoder_pattern: str = "dense"  # encoder self-attention, a patterns.parse spec ("window:16")
    decoder_pattern: str = "causal"  # decoder (or lm) self-attention ("causal&window:16"); must be causal
    positional: str = "sinusoidal"  # lm: sinusoidal positions, or a learned relative-position bias ("relative")
    context: int = 256  # lm: tokens in a training sequence
    d_model: int = 128  # model width
    nhead: int = 4  # attention heads
    layers: int = 3  # encoder layers and decoder layers (each)
    ff: int = 512  # feed-forward width
    dropout: float = 0.1  # dropout everywhere, embeddings included
    label_smoothing: float = 0.1  # of the cross-entropy
    steps: int = 1_000  # optimizer steps; scheduled sampling ramps over them
    time_limit: Optional[float] = None  # stop after this many wall-clock seconds of the loop, validation included
    batch_size: Optional[int] = None  # pairs (lm: sequences) a batch, per process and micro-batch (default 128, lm 16)
    max_tokens: Optional[int] = None  # padded tokens a batch, per process and micro-batch (LengthBucketSampler counts)
    accumulate: int = 1  # micro-batches whose gradients are summed before each optimizer step
    lr_factor: float = 1.0  # Noam: lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup: int = 400  # Noam warm-up steps (the lr peaks there)
    clip_norm: float = 1.0  # clip the global gradient L2 norm to this (0: no clipping)
    scheduled_sampling: float = 0.0  # final share of decoder inputs replaced by model predictions
    eval_every: int = 200  # steps between validations (each also writes last.pt)
    eval_seconds: Optional[float] = None  # also validate when this many seconds passed since the last validation
    valid_subset: Optional[int] = None  # translation: validate (in the loop) on this many fixed pairs, not all
    max_len: int = 64  # translation: longest sentence in tokens (longer ones are cut) and most tokens generated
    out: str = "runs/train"  # directory of checkpoints, log and plots
    seed: int = 0  # model init, batch order and the numbers task's split
    resume: bool = False  # continue exactly from out/last.pt
    overwrite: bool = False  # a new run may replace the run in out (its files go once the new run's first checkpoint is written)
    reference_torch: bool = False  # torch.nn.Transformer layers in place of the graph layers
    progress: bool = True  # show a tqdm progress bar
    device: str = "auto"  # cpu, cuda (the LOCAL_RANK-th GPU) or auto (a GPU if there is one)
    precision: str = "fp32"  # fp32, or bf16 (autocast; weights, optimizer and attention sums stay fp32)
    dist_timeout: float = 600.0  # seconds a process waits for the others before the run fails


def check_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` (or ``FileNotFoundError``) naming the first bad field of ``config``."""
    minimum = dict.fromkeys(("d_model", "nhead", "layers", "ff", "steps", "warmup", "eval_every", "train_size",
                             "accumulate", "context"), 1) | {"valid_size": 0, "test_size": 0, "max_len": 2}
    for name, lowest in minimum.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    for name, lowest in (("batch_size", 1), ("max_tokens", 1), ("vocab_size", 5), ("min_frequency", 1),
                         ("valid_subset", 1)):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lowest):
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    if config.d_model % config.nhead:
        raise ValueError(f"d_model ({config.d_model}) must be divisible by nhead ({config.nhead})")
    for name, lo, hi in (("dropout", 0, 1), ("label_smoothing", 0, 1)):
        if not lo <= getattr(config, name) < hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}), got {getattr(config, name)}")
    if not 0 < config.valid_fraction < 1:  # 0 would leave nothing to validate on
        raise ValueError(f"valid_fraction must be in (0, 1), got {config.valid_fraction}")
    if not 0 <= config.scheduled_sampling <= 1:
        raise ValueError(f"scheduled_sampling must be in [0, 1], got {config.scheduled_sampling}")
    if not config.lr_factor > 0 or config.clip_norm < 0:
        raise ValueError(f"need lr_factor > 0 and clip_norm >= 0, got {config.lr_factor} and {config.clip_norm}")
    for name in ("time_limit", "eval_seconds"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value}")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {config.device!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {config.precision!r}")
    if not config.dist_timeout > 0:
        raise ValueError(f"dist_timeout must be > 0 seconds, got {config.dist_timeout}")
    for name, value, choices in (("tokenizer", config.tokenizer, TOKENIZERS), ("positional", config.positional, POSITIONALS)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    if tokenizer_kind(config) in ("bpe", "unigram") and config.vocab_size is not None and config.vocab_size < 260:
        raise ValueError(f"vocab_size must be >= 260 for a byte-level {tokenizer_kind(config)} tokenizer "
                         f"(4 specials and 256 bytes), got {config.vocab_size}")
    _check_patterns(config)
    _check_data(config)


def _check_patterns(config: TrainConfig) -> None:
    for name in ("encoder_pattern", "decoder_pattern"):
        pattern = P.parse(getattr(config, name))  # ValueError naming the unknown pattern
        if not pattern.position_based:
            raise ValueError(f"{name} {getattr(config, name)!r} follows a graph's edges, and text has none: "
                             f"use a sequence pattern (dense, causal, window:16, block:8, bigbird:3:1:2:0, ...)")
        if config.reference_torch and pattern.as_band() is None:
            raise ValueError(f"{name} {getattr(config, name)!r}: the torch reference computes band patterns only")
    decoder = P.parse(config.decoder_pattern)
    if not decoder.is_causal_band:
        raise ValueError(f"decoder_pattern must be a causal band ('causal' or 'causal&window:W'), got {decoder!r}")


def _check_data(config: TrainConfig) -> None:
    """The fields that say where the data comes from agree, and the files exist."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; choose one of {list(TASKS)} or give src and tgt files")
    if (config.src is None) != (config.tgt is None) or (config.valid_src is None) != (config.valid_tgt is None):
        raise ValueError("give src and tgt together, and valid_src and valid_tgt together")
    if config.src is None and config.valid_src is not None:
        raise ValueError("valid_src/valid_tgt need src/tgt")
    # One rule, checked first: is_lm() says translation when src is given, which would train a
    # translation model whose config says task 'lm'.
    if config.task == "lm" and config.src is not None:
        raise ValueError("task 'lm' learns text files (--text), not parallel files (--src/--tgt): drop --task lm "
                         "to translate, or --src/--tgt to learn a language model")
    if is_lm(config):
        if not config.text:
            raise ValueError("task 'lm' needs text files to learn (--text FILE ...)")
        for name in ("reference_torch", "shared_vocab"):
            if getattr(config, name):
                raise ValueError(f"{name} is an option of translation, not of task 'lm'")
        if config.scheduled_sampling:
            raise ValueError("scheduled_sampling is an option of translation, not of task 'lm'")
    elif config.text or config.valid_text:
        raise ValueError("text and valid_text are the files of task 'lm' (--task lm)")
    files = [("src", config.src), ("tgt", config.tgt), ("valid_src", config.valid_src), ("valid_tgt", config.valid_tgt)]
    files += [(name, path) for name in ("text", "valid_text") for path in (getattr(config, name) or [])]
    for name, path in files:
        if path is not None:
            check_file(path, name)


def config_from_dict(d: dict) -> TrainConfig:
    """Inverse of ``dataclasses.asdict``; ``ValueError`` for keys :class:`TrainConfig` lacks.

    Fields that older versions stored and this one no longer has (:data:`RETIRED_FIELDS`) are
    dropped, and fields they lacked take their defaults, so their checkpoints still load.
    """
    known = {f.name for f in fields(TrainConfig)}
    d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {unknown}")
    return TrainConfig(**d)


def is_lm(config: TrainConfig) -> bool:
    """Whether ``config`` trains a language model (``task="lm"``) rather than a translation model."""
    return config.task == "lm" and config.src is None


def tokenizer_kind(config: TrainConfig) -> str:
    """The tokenizer ``config`` trains: its ``tokenizer``, with ``"auto"`` resolved (word tokens for
    the numbers task, whose words all repeat; byte-level BPE for any other text)."""
    if config.tokenizer != "auto":
        return config.tokenizer
    return "word" if config.src is None and not is_lm(config) else "bpe"


def load_task(config: TrainConfig) -> dict:
    """The data of ``config``: translation ``{"train", "valid"}`` (and ``"test"``, ``"test_round"``
    for the numbers task) lists of ``(src, tgt)`` pairs; for ``task="lm"`` ``{"train", "valid"}``
    lists of documents. Bad files raise here, before a run writes anything."""
    if is_lm(config):
        documents = read_documents(config.text)
        if config.valid_text:
            return {"train": documents, "valid": read_documents(config.valid_text)}
        train, valid = split_documents(documents, config.valid_fraction, config.seed)
        return {"train": train, "valid": valid}
    if config.src is None:
        return numbers_task(config.seed, train_size=config.train_size, valid_size=config.valid_size,
                            test_size=config.test_size)
    pairs = read_parallel(config.src, config.tgt)
    if config.valid_src is not None:
        return {"train": pairs, "valid": read_parallel(config.valid_src, config.valid_tgt)}
    train_pairs, valid_pairs = split_pairs(pairs, config.valid_fraction, config.seed)
    return {"train": train_pairs, "valid": valid_pairs}


def task_test_pairs(config: TrainConfig, split: str = "test") -> list:
    """The numbers task's ``"test"`` (uniform) or ``"test_round"`` split of ``config``, generated
    without the training pairs."""
    if config.src is not None or is_lm(config):
        raise ValueError("the model was not trained on the numbers task: give the test files (src and tgt)")
    return number_pairs(number_splits(config.seed, train_size=config.train_size, valid_size=config.valid_size,
                                      test_size=config.test_size)[split])


def source_text(config: TrainConfig, text: str) -> str:
    """A user's sentence as the training data was written (the numbers task is lowercase)."""
    return normalize(text) if config.src is None else " ".join(text.split())


def build_tokenizers(config: TrainConfig, data: dict) -> tuple[Optional[Tokenizer], Tokenizer]:
    """``(src_tokenizer, tgt_tokenizer)`` trained on the training data of :func:`load_task`
    (one shared tokenizer with ``shared_vocab``); for ``task="lm"`` ``(None, tokenizer)``."""
    kind = tokenizer_kind(config)
    extra = {"min_frequency": config.min_frequency} if kind == "bpe" else {}
    if is_lm(config):
        return None, Tokenizer.train(data["train"], kind, config.vocab_size, **extra)
    src = [s for s, _ in data["train"]]
    tgt = [t for _, t in data["train"]]
    if config.shared_vocab:
        shared = Tokenizer.train(src + tgt, kind, config.vocab_size, **extra)
        return shared, shared
    return (Tokenizer.train(src, kind, config.vocab_size, **extra),
            Tokenizer.train(tgt, kind, config.vocab_size, **extra))


def build_model(config: TrainConfig, src_vocab: Optional[int], tgt_vocab: int):
    """The model of ``config``: :class:`Seq2Seq` (or :class:`TorchSeq2Seq` with ``reference_torch``)
    over vocabularies of ``src_vocab`` and ``tgt_vocab`` ids, or for ``task="lm"`` a
    :class:`~graphattn.nn.CausalLM` over ``tgt_vocab`` ids."""
    if is_lm(config):
        return CausalLM(tgt_vocab, config.d_model, config.nhead, config.layers, config.ff, config.dropout,
                        pattern=config.decoder_pattern, positional=config.positional)
    cls = TorchSeq2Seq if config.reference_torch else Seq2Seq
    return cls(src_vocab, tgt_vocab, config.d_model, config.nhead, config.layers, config.layers, config.ff,
               config.dropout, encoder_pattern=P.parse(config.encoder_pattern),
               decoder_pattern=P.parse(config.decoder_pattern))


def checkpoint_tokenizers(ckpt: dict, config: TrainConfig) -> tuple[Optional[Tokenizer], Tokenizer]:
    """``(src_tokenizer, tgt_tokenizer)`` stored in a checkpoint (version 1's word lists too)."""
    vocab = ckpt["vocab"]
    if is_lm(config):
        return None, Tokenizer.from_dict(vocab["text"])
    return Tokenizer.from_dict(vocab["src"]), Tokenizer.from_dict(vocab["tgt"])


def state_dict_mismatch(model, state: dict, shown: int = 3) -> Optional[str]:
    """What keeps ``state`` from loading into ``model``, in one line (missing keys, unexpected
    keys, shapes that differ; ``shown`` of each, then a count), or None if it fits. torch's own
    message lists every key over many lines."""
    if not isinstance(state, dict):
        return f"the weights are a {type(state).__name__}, not a state_dict"
    own = model.state_dict()

    def listed(what: str, items: list) -> str:
        more = f" and {len(items) - shown} more" if len(items) > shown else ""
        return f"{len(items)} {what} ({', '.join(items[:shown])}{more})"

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    sizes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    parts = [listed(what, items) for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                      ("size mismatches (checkpoint vs model)", sizes)) if items]
    return "; ".join(parts) or None


def load_model(path) -> tuple:
    """``(model in eval mode, src_tokenizer, tgt_tokenizer, config)`` of a checkpoint (for a
    language model ``src_tokenizer`` is None); ``ValueError`` if it is bad."""
    ckpt = load_checkpoint(path)
    try:
        config = config_from_dict(ckpt["config"])
        src_tok, tgt_tok = checkpoint_tokenizers(ckpt, config)
        model = build_model(config, None if src_tok is None else len(src_tok), len(tgt_tok))
        mismatch = state_dict_mismatch(model, ckpt["model"])
        if mismatch:
            raise ValueError(f"its weights do not fit the model its config builds: {mismatch}")
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{str(path)!r} holds an inconsistent checkpoint: {str(e).splitlines()[0]}") from None
    return model.eval(), src_tok, tgt_tok, config
