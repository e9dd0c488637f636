r"""The configuration of a text training run, the data it names and the model it builds.

``graphattn train`` maps its flags onto :class:`TrainConfig` one to one; a checkpoint stores the
config as a plain dict, and :func:`load_model` rebuilds the model from it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from graphattn import patterns as P
from graphattn.text.checkpoint import load_checkpoint
from graphattn.text.data import read_parallel, split_pairs
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.text.numbers import normalize, number_pairs, number_splits, numbers_task
from graphattn.text.vocab import Vocab

__all__ = ["TrainConfig", "TASKS", "RUN_FIELDS", "RETIRED_FIELDS", "PRECISIONS", "check_config", "config_from_dict",
           "load_task", "task_test_pairs", "source_text", "build_model", "load_model"]

TASKS = ("numbers-en-fr",)
# On --resume these come from the command line; everything else from the checkpoint's config.
RUN_FIELDS = ("steps", "time_limit", "out", "resume", "progress", "accumulate", "device", "precision", "dist_timeout")
#: fields of earlier versions, ignored when their checkpoints load
RETIRED_FIELDS = ("threads",)
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is one ``graphattn train`` flag.

    Process-wide settings (torch threads, logging) belong to the entry point, not to the run:
    ``graphattn train --threads`` sets them before calling :func:`~graphattn.text.train.train`.
    """

    task: str = "numbers-en-fr"  # built-in task, used when src/tgt are not given
    src: Optional[str] = None  # source side of a parallel text, one sentence a line
    tgt: Optional[str] = None  # target side: line i translates line i of src
    valid_src: Optional[str] = None  # validation source file (default: split off src/tgt)
    valid_tgt: Optional[str] = None  # validation target file
    valid_fraction: float = 0.05  # share of src/tgt held out for validation without valid files
    train_size: int = 20_000  # numbers task: training pairs (at least its ~130 core numbers)
    valid_size: int = 500  # numbers task: validation pairs
    test_size: int = 1_000  # numbers task: test pairs (what `graphattn evaluate` scores)
    encoder_pattern: str = "dense"  # encoder self-attention, a patterns.parse spec ("window:16")
    decoder_pattern: str = "causal"  # decoder self-attention ("causal&window:16"); must be causal
    d_model: int = 128  # model width
    nhead: int = 4  # attention heads
    layers: int = 3  # encoder layers and decoder layers (each)
    ff: int = 512  # feed-forward width
    dropout: float = 0.1  # dropout everywhere, embeddings included
    label_smoothing: float = 0.1  # of the cross-entropy
    steps: int = 1_000  # optimizer steps; scheduled sampling ramps over them
    time_limit: Optional[float] = None  # stop after this many wall-clock seconds of the loop, validation included
    batch_size: Optional[int] = None  # sentence pairs a batch, per process and micro-batch (default 128 unless max_tokens)
    max_tokens: Optional[int] = None  # padded tokens a batch, per process and micro-batch (LengthBucketSampler counts)
    accumulate: int = 1  # micro-batches whose gradients are summed before each optimizer step
    lr_factor: float = 1.0  # Noam: lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup: int = 400  # Noam warm-up steps (the lr peaks there)
    clip_norm: float = 1.0  # clip the global gradient L2 norm to this (0: no clipping)
    scheduled_sampling: float = 0.0  # final share of decoder inputs replaced by model predictions
    eval_every: int = 200  # steps between validations (each also writes last.pt)
    max_len: int = 64  # most tokens generated per sentence when decoding
    out: str = "runs/train"  # directory of checkpoints, log and plots
    seed: int = 0  # model init, batch order and the numbers task's split
    resume: bool = False  # continue exactly from out/last.pt
    reference_torch: bool = False  # torch.nn.Transformer layers in place of the graph layers
    progress: bool = True  # show a tqdm progress bar
    device: str = "auto"  # cpu, cuda (the LOCAL_RANK-th GPU) or auto (a GPU if there is one)
    precision: str = "fp32"  # fp32, or bf16 (autocast; weights, optimizer and attention sums stay fp32)
    dist_timeout: float = 600.0  # seconds a process waits for the others before the run fails


def check_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` (or ``FileNotFoundError``) naming the first bad field of ``config``."""
    minimum = dict.fromkeys(("d_model", "nhead", "layers", "ff", "steps", "warmup", "eval_every", "max_len",
                             "train_size", "accumulate"), 1) | {"valid_size": 0, "test_size": 0}
    for name, lowest in minimum.items():
        value = getattr(config, name)
        if not isinstance(value, int) or value < lowest:
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    for name in ("batch_size", "max_tokens"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if config.d_model % config.nhead:
        raise ValueError(f"d_model ({config.d_model}) must be divisible by nhead ({config.nhead})")
    for name, lo, hi in (("dropout", 0, 1), ("label_smoothing", 0, 1), ("valid_fraction", 0, 1)):
        if not lo <= getattr(config, name) < hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}), got {getattr(config, name)}")
    if not 0 <= config.scheduled_sampling <= 1:
        raise ValueError(f"scheduled_sampling must be in [0, 1], got {config.scheduled_sampling}")
    if not config.lr_factor > 0 or config.clip_norm < 0:
        raise ValueError(f"need lr_factor > 0 and clip_norm >= 0, got {config.lr_factor} and {config.clip_norm}")
    if config.time_limit is not None and not config.time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {config.time_limit}")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {config.device!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {config.precision!r}")
    if not config.dist_timeout > 0:
        raise ValueError(f"dist_timeout must be > 0 seconds, got {config.dist_timeout}")
    for name in ("encoder_pattern", "decoder_pattern"):
        pattern = P.parse(getattr(config, name))  # ValueError naming the unknown pattern
        if config.reference_torch and not isinstance(pattern, P.Band):
            raise ValueError(f"{name} {getattr(config, name)!r}: the torch reference computes band patterns only")
    if (config.src is None) != (config.tgt is None) or (config.valid_src is None) != (config.valid_tgt is None):
        raise ValueError("give src and tgt together, and valid_src and valid_tgt together")
    if config.src is None and config.valid_src is not None:
        raise ValueError("valid_src/valid_tgt need src/tgt")
    if config.src is None and config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; choose one of {list(TASKS)} or give src and tgt files")
    for name in ("src", "tgt", "valid_src", "valid_tgt"):
        path = getattr(config, name)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{name}: no such file: {path!r}")


def config_from_dict(d: dict) -> TrainConfig:
    """Inverse of ``dataclasses.asdict``; ``ValueError`` for keys :class:`TrainConfig` lacks.

    Fields that older versions stored and this one no longer has (:data:`RETIRED_FIELDS`) are
    dropped, so their checkpoints still load.
    """
    known = {f.name for f in fields(TrainConfig)}
    d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {unknown}")
    return TrainConfig(**d)


def load_task(config: TrainConfig) -> dict:
    """``{"train", "valid"}`` (and ``"test"`` for the numbers task) lists of ``(src, tgt)`` pairs."""
    if config.src is None:
        return numbers_task(config.seed, train_size=config.train_size, valid_size=config.valid_size,
                              test_size=config.test_size)
    pairs = read_parallel(config.src, config.tgt)
    if config.valid_src is not None:
        return {"train": pairs, "valid": read_parallel(config.valid_src, config.valid_tgt)}
    train_pairs, valid_pairs = split_pairs(pairs, config.valid_fraction, config.seed)
    return {"train": train_pairs, "valid": valid_pairs}


def task_test_pairs(config: TrainConfig) -> list:
    """The numbers task's test split of ``config`` (without generating the training pairs)."""
    if config.src is not None:
        raise ValueError("the model was trained on files: give the test files (src and tgt)")
    return number_pairs(number_splits(config.seed, train_size=config.train_size, valid_size=config.valid_size,
                                          test_size=config.test_size)["test"])


def source_text(config: TrainConfig, text: str) -> str:
    """A user's sentence as the training data was written (the numbers task is lowercase)."""
    return normalize(text) if config.src is None else " ".join(text.split())


def build_model(config: TrainConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """The :class:`Seq2Seq` (or :class:`TorchSeq2Seq` with ``reference_torch``) of ``config``."""
    cls = TorchSeq2Seq if config.reference_torch else Seq2Seq
    return cls(src_vocab, tgt_vocab, config.d_model, config.nhead, config.layers, config.layers, config.ff,
               config.dropout, encoder_pattern=P.parse(config.encoder_pattern),
               decoder_pattern=P.parse(config.decoder_pattern))


def load_model(path) -> tuple[Seq2Seq, Vocab, Vocab, TrainConfig]:
    """``(model in eval mode, src_vocab, tgt_vocab, config)`` of a checkpoint; ``ValueError`` if bad."""
    ckpt = load_checkpoint(path)
    try:
        config = config_from_dict(ckpt["config"])
        src_vocab, tgt_vocab = Vocab.from_dict(ckpt["vocab"]["src"]), Vocab.from_dict(ckpt["vocab"]["tgt"])
        model = build_model(config, len(src_vocab), len(tgt_vocab))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{str(path)!r} holds an inconsistent checkpoint: {str(e).splitlines()[0]}") from None
    return model.eval(), src_vocab, tgt_vocab, config
