r"""Training of :class:`~graphattn.models.Seq2Seq` translation models.

One step: a flat batch of sentence pairs of similar length (:class:`LengthBucketSampler`, no
padding is computed), label-smoothed cross-entropy, Adam with the Noam schedule
(:func:`noam_lambda` in ``LambdaLR``), gradient clipping and, optionally, scheduled sampling.
Every ``eval_every`` steps the model translates the validation set greedily; BLEU and exact match
go to the CSV log and the best checkpoint by BLEU is kept. ``train(TrainConfig(...))`` returns a
:class:`TrainResult`; ``graphattn train`` maps its flags onto :class:`TrainConfig` one to one.

Files written to ``config.out``: ``last.pt`` and ``best.pt`` (see :mod:`graphattn.checkpoint`),
``log.csv``, ``curves.png`` (loss, lr, validation scores) and ``attention.png`` (the last decoder
layer's cross-attention on one validation sentence).

Under ``torchrun --nproc_per_node=W`` the same call trains data-parallel
(:mod:`graphattn.distributed`): every rank takes an interleaved share of each global batch of
``batch_size * W * accumulate`` pairs, ``DistributedDataParallel`` averages the gradients, the
loss is normalised by the global number of target tokens (so ``W`` processes with batch ``b``
compute exactly the step of one process with batch ``W b``), validation is sharded and gathered,
and only rank 0 writes files. ``accumulate=K`` sums the gradients of ``K`` micro-batches before
each step. The global batch is part of the run: a checkpoint resumes in any number of processes
with the same global batches, split into smaller or larger shares.
"""
from __future__ import annotations

import contextlib
import csv
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphattn import data as D
from graphattn import distributed
from graphattn import patterns as P
from graphattn.checkpoint import FORMAT, VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from graphattn.decoding import beam_search, greedy_decode
from graphattn.models import Seq2Seq, TorchSeq2Seq
from graphattn.plots import attention_example, plot_attention, plot_curves
from graphattn.sequence import lengths_to_ptr, local_positions

__all__ = [
    "TrainConfig", "TrainResult", "FlatBatch", "noam_lambda", "sampling_share", "scheduled_sampling_inputs",
    "flat_collate", "split_batch", "FlatForward", "check_config", "config_from_dict", "load_task", "task_test_pairs", "source_text", "build_model", "load_model", "translate",
    "evaluate", "train_step", "train", "TASKS",
]

TASKS = ("numbers-en-fr",)
# On --resume these come from the command line; everything else from the checkpoint's config.
RUN_FIELDS = ("steps", "time_limit", "out", "resume", "threads", "progress", "accumulate", "device", "precision",
              "dist_timeout")
PRECISIONS = ("fp32", "bf16")
LOG_FIELDS = ("step", "loss", "lr", "tokens_per_s", "valid_bleu", "valid_em")


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is one ``graphattn train`` flag."""

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
    threads: Optional[int] = None  # torch.set_num_threads (None: leave torch's setting)
    progress: bool = True  # show a tqdm progress bar
    device: str = "auto"  # cpu, cuda (the LOCAL_RANK-th GPU) or auto (a GPU if there is one)
    precision: str = "fp32"  # fp32, or bf16 (autocast; weights, optimizer and attention sums stay fp32)
    dist_timeout: float = 600.0  # seconds a process waits for the others before the run fails


@dataclass
class TrainResult:
    """What :func:`train` returns; ``model`` holds the best weights by validation BLEU."""

    config: TrainConfig
    model: Seq2Seq
    src_vocab: D.Vocab
    tgt_vocab: D.Vocab
    step: int  # optimizer steps done in total (resumed runs included)
    losses: list  # the loss of each step of this run
    valid: dict  # validation scores of the last evaluation: bleu, exact_match, n
    best_bleu: float
    tokens_per_s: float  # source + target tokens per second of training (validation excluded)
    train_seconds: float
    stopped_by: str  # "steps" or "time_limit"
    paths: dict = field(default_factory=dict)  # last, best, log, curves, attention


# --- Pure pieces -------------------------------------------------------------------------------


def noam_lambda(d_model: int, warmup: int, factor: float = 1.0) -> Callable[[int], float]:
    r"""The Noam rate :math:`f\, d^{-1/2} \min(s^{-1/2},\ s\, w^{-3/2})` as a function of the step.

    Hand it to ``LambdaLR`` with the optimizer's ``lr=1.0``. ``LambdaLR`` asks for step 0 when
    it is built, where the formula divides by zero; step 0 gets the rate of step 1.
    """
    P._check_int("d_model", d_model, 1)
    P._check_int("warmup", warmup, 1)
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")

    def rate(step: int) -> float:
        step = max(step, 1)
        return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)

    return rate


def sampling_share(step: int, steps: int, final: float) -> float:
    """Scheduled-sampling share at 0-based ``step`` of ``steps``: 0 at the first, ``final`` at the last."""
    return final * min(1.0, step / max(1, steps - 1))


def scheduled_sampling_inputs(tgt_in: Tensor, ptr_tgt: Tensor, predictions: Tensor, share: float,
                              generator: Optional[torch.Generator] = None) -> Tensor:
    """Decoder inputs ``[N_t]`` with a ``share`` of the gold tokens replaced by predictions.

    ``predictions [N_t]`` are the argmax of a teacher-forced pass: the one at position ``t``
    predicts the token at ``t + 1`` of the same sentence. Position 0 (BOS) always stays.
    Training on its own guesses shows the model the kind of prefixes it meets at inference
    (exposure bias, Bengio et al. 2015).
    """
    positions = local_positions(ptr_tgt)
    shifted = torch.cat([tgt_in[:1], predictions[:-1]])  # row i: prediction made at row i - 1
    draw = torch.rand(tgt_in.shape, generator=generator, device=tgt_in.device)
    return torch.where((positions > 0) & (draw < share), shifted, tgt_in)


class FlatBatch(NamedTuple):
    """Sentence pairs as flat path-graph batches: no padding anywhere."""

    src: Tensor  # [N_s] source ids, each sentence ending with EOS
    ptr_src: Tensor  # [B + 1]
    tgt_in: Tensor  # [N_t] BOS + target, the decoder input
    tgt_out: Tensor  # [N_t] target + EOS, the labels
    ptr_tgt: Tensor  # [B + 1]

    @property
    def num_tokens(self) -> int:
        return self.src.numel() + self.tgt_in.numel()


def flat_collate(items: Sequence[tuple[Tensor, Tensor]], bos_id: int = D.BOS_ID, eos_id: int = D.EOS_ID) -> FlatBatch:
    """``(src_ids [S_b], tgt_ids [T_b])`` items of :class:`~graphattn.data.ParallelDataset` -> :class:`FlatBatch`."""
    bos, eos = torch.tensor([bos_id]), torch.tensor([eos_id])
    src = [s for s, _ in items]
    return FlatBatch(
        torch.cat(src), lengths_to_ptr(torch.tensor([len(s) for s in src])),
        torch.cat([torch.cat([bos, t]) for _, t in items]), torch.cat([torch.cat([t, eos]) for _, t in items]),
        lengths_to_ptr(torch.tensor([len(t) + 1 for _, t in items])),
    )


# --- Configuration, data and models -------------------------------------------------------------


def check_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` (or ``FileNotFoundError``) naming the first bad field of ``config``."""
    minimum = dict.fromkeys(("d_model", "nhead", "layers", "ff", "steps", "warmup", "eval_every", "max_len",
                             "train_size", "accumulate"), 1) | {"valid_size": 0, "test_size": 0}
    for name, lowest in minimum.items():
        value = getattr(config, name)
        if not isinstance(value, int) or value < lowest:
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    for name in ("batch_size", "max_tokens", "threads"):
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
    """Inverse of ``dataclasses.asdict``; ``ValueError`` for keys :class:`TrainConfig` lacks."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {unknown}")
    return TrainConfig(**d)


def load_task(config: TrainConfig) -> dict:
    """``{"train", "valid"}`` (and ``"test"`` for the numbers task) lists of ``(src, tgt)`` pairs."""
    if config.src is None:
        return D.numbers_task(config.seed, train_size=config.train_size, valid_size=config.valid_size,
                              test_size=config.test_size)
    pairs = D.read_parallel(config.src, config.tgt)
    if config.valid_src is not None:
        return {"train": pairs, "valid": D.read_parallel(config.valid_src, config.valid_tgt)}
    train_pairs, valid_pairs = D.split_pairs(pairs, config.valid_fraction, config.seed)
    return {"train": train_pairs, "valid": valid_pairs}


def task_test_pairs(config: TrainConfig) -> list:
    """The numbers task's test split of ``config`` (without generating the training pairs)."""
    if config.src is not None:
        raise ValueError("the model was trained on files: give the test files (src and tgt)")
    return D.number_pairs(D.number_splits(config.seed, train_size=config.train_size, valid_size=config.valid_size,
                                          test_size=config.test_size)["test"])


def source_text(config: TrainConfig, text: str) -> str:
    """A user's sentence as the training data was written (the numbers task is lowercase)."""
    return D.normalize(text) if config.src is None else " ".join(text.split())


def build_model(config: TrainConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """The :class:`Seq2Seq` (or :class:`TorchSeq2Seq` with ``reference_torch``) of ``config``."""
    cls = TorchSeq2Seq if config.reference_torch else Seq2Seq
    return cls(src_vocab, tgt_vocab, config.d_model, config.nhead, config.layers, config.layers, config.ff,
               config.dropout, encoder_pattern=P.parse(config.encoder_pattern),
               decoder_pattern=P.parse(config.decoder_pattern))


def load_model(path) -> tuple[Seq2Seq, D.Vocab, D.Vocab, TrainConfig]:
    """``(model in eval mode, src_vocab, tgt_vocab, config)`` of a checkpoint; ``ValueError`` if bad."""
    ckpt = load_checkpoint(path)
    try:
        config = config_from_dict(ckpt["config"])
        src_vocab, tgt_vocab = D.Vocab.from_dict(ckpt["vocab"]["src"]), D.Vocab.from_dict(ckpt["vocab"]["tgt"])
        model = build_model(config, len(src_vocab), len(tgt_vocab))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{str(path)!r} holds an inconsistent checkpoint: {str(e).splitlines()[0]}") from None
    return model.eval(), src_vocab, tgt_vocab, config


# --- Evaluation ---------------------------------------------------------------------------


@torch.no_grad()
def translate(model: Seq2Seq, src_vocab: D.Vocab, tgt_vocab: D.Vocab, sentences: Sequence[str],
              max_len: int = 64, beam_size: int = 1, batch_size: int = 250) -> list[str]:
    """Translations of ``sentences`` (greedy, or beam search with ``beam_size > 1``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(sentences), batch_size):
        ids = [torch.tensor(src_vocab.encode(s), dtype=torch.long) for s in sentences[i:i + batch_size]]
        src, ptr = torch.cat(ids).to(device), lengths_to_ptr(torch.tensor([len(x) for x in ids])).to(device)
        decoded = (greedy_decode(model, src, ptr, max_len) if beam_size == 1
                   else beam_search(model, src, ptr, beam_size, max_len=max_len))
        out += [tgt_vocab.decode(tokens) for tokens in decoded.tokens]
    model.train(was_training)
    return out


def evaluate(model: Seq2Seq, src_vocab: D.Vocab, tgt_vocab: D.Vocab, pairs: Sequence[tuple[str, str]],
             max_len: int = 64, beam_size: int = 1) -> dict:
    """``{"bleu", "exact_match", "n"}`` of the model's translations of ``pairs`` (percentages)."""
    hyps = translate(model, src_vocab, tgt_vocab, [s for s, _ in pairs], max_len, beam_size)
    refs = [t for _, t in pairs]
    return {"bleu": D.bleu(hyps, refs), "exact_match": D.exact_match(hyps, refs), "n": len(pairs)}


# --- The loop -----------------------------------------------------------------------------------


def _open_log(path: Path, keep_until: int):
    """The CSV log for appending; rows past ``keep_until`` (written after the checkpoint we resume) go."""
    rows = []
    if keep_until > 0 and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
    f = open(path, "w", newline="")
    writer = csv.DictWriter(f, LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return f, writer


class FlatForward(nn.Module):
    """``forward = model.forward_flat``: what ``DistributedDataParallel`` wraps, since DDP hooks
    only ``forward`` and the padded ``Seq2Seq.forward`` would undo the flat batches."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, ptr_src: Tensor, tgt: Tensor, ptr_tgt: Tensor) -> Tensor:
        return self.model.forward_flat(src, ptr_src, tgt, ptr_tgt)


def split_batch(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` dealt into ``parts`` interleaved micro-batches (``items[j::parts]``), empty ones dropped.

    A batch's examples are sorted by length, so dealing them gives micro-batches of about equal
    cost, as :class:`~graphattn.data.LengthBucketSampler` deals a global batch to the ranks.
    """
    return [list(items[j::parts]) for j in range(parts) if items[j::parts]]


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model.model if isinstance(model, FlatForward) else model


def train_step(model: nn.Module, batch, optimizer, loss_fn, clip_norm: float, share: float = 0.0,
               ctx: Optional[distributed.Context] = None, precision: str = "fp32") -> float:
    """One optimizer step; the loss of the whole (global) batch, a mean over its target tokens.

    ``batch`` is a :class:`FlatBatch` or a list of them (micro-batches whose gradients are summed,
    gradient accumulation). ``model`` is a :class:`~graphattn.models.Seq2Seq` or, across
    processes, ``DistributedDataParallel(FlatForward(seq2seq))``. ``loss_fn`` returns the mean
    over a micro-batch's tokens; each micro-batch is weighted by its tokens, and the gradients
    are divided by the tokens of all ranks' micro-batches together, so the step equals one
    process's step on the union of the batches. ``share``: scheduled-sampling share of inputs.
    ``precision="bf16"``: forward and loss under ``torch.autocast`` in bfloat16.
    """
    ctx = ctx or distributed.Context()
    micro = [batch] if isinstance(batch, FlatBatch) else list(batch)
    if not micro:
        raise ValueError("train_step needs at least one micro-batch")
    raw = _unwrap(model)
    forward = model if isinstance(model, nn.parallel.DistributedDataParallel) else raw.forward_flat
    raw.train()
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    loss_sum, tokens = 0.0, 0
    for i, mb in enumerate(micro):
        tgt_in = mb.tgt_in
        if share > 0:
            with torch.no_grad(), autocast:
                guess = raw.forward_flat(mb.src, mb.ptr_src, tgt_in, mb.ptr_tgt).argmax(-1)
            tgt_in = scheduled_sampling_inputs(tgt_in, mb.ptr_tgt, guess, share)
        n = mb.tgt_out.numel()
        # DDP all-reduces the gradients during the last micro-batch's backward only.
        with distributed.no_sync(model, sync=i == len(micro) - 1):
            with autocast:
                # The model returns log-probabilities; CrossEntropyLoss's log_softmax leaves them unchanged.
                loss = loss_fn(forward(mb.src, mb.ptr_src, tgt_in, mb.ptr_tgt), mb.tgt_out) * n
            loss.backward()
        loss_sum, tokens = loss_sum + loss.item(), tokens + n
    loss_sum, tokens = distributed.all_sum([loss_sum, tokens], ctx)
    # Gradients now hold the sum over this rank's tokens averaged over ranks (DDP divides by W):
    # scale to the mean over every token of the global batch.
    grads = [p.grad for p in raw.parameters() if p.grad is not None]
    if grads:
        torch._foreach_mul_(grads, ctx.world_size / tokens)
    if clip_norm > 0:
        nn.utils.clip_grad_norm_(raw.parameters(), clip_norm)
    optimizer.step()
    return loss_sum / tokens


def _rank_seed(seed: int, step: int, rank: int) -> int:
    """A seed for rank ``rank``'s dropout stream: different ranks must not drop the same units."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2 ** 63)


def evaluate_sharded(model: Seq2Seq, src_vocab: D.Vocab, tgt_vocab: D.Vocab, pairs: Sequence[tuple[str, str]],
                     max_len: int, ctx: distributed.Context) -> dict:
    """:func:`evaluate` with each rank translating ``pairs[rank::W]``; every rank gets the same scores."""
    hyps = distributed.gather_shards(
        translate(model, src_vocab, tgt_vocab, [s for s, _ in pairs[ctx.rank::ctx.world_size]], max_len), ctx)
    refs = [t for _, t in pairs]
    return {"bleu": D.bleu(hyps, refs), "exact_match": D.exact_match(hyps, refs), "n": len(pairs)}


def train(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says; with ``config.resume``, continue from ``out/last.pt`` exactly.

    On resume the checkpoint's configuration is used, except for the fields of ``RUN_FIELDS``
    (steps, time_limit, out, resume, threads, progress, accumulate, device, precision,
    dist_timeout), which come from ``config``. Started by ``torchrun``, the processes train
    together (see the module's docstring); a rank that dies or hangs ends the others with a
    :class:`~graphattn.distributed.DistributedError` after ``dist_timeout`` seconds.
    """
    check_config(config)
    ctx = distributed.init(config.device, config.dist_timeout)
    try:
        with distributed.guard(ctx):
            return _train(config, ctx)
    finally:
        distributed.shutdown(ctx)


def _train(config: TrainConfig, ctx: distributed.Context) -> TrainResult:
    out = Path(config.out)
    paths = {"last": out / "last.pt", "best": out / "best.pt", "log": out / "log.csv",
             "curves": out / "curves.png", "attention": out / "attention.png"}
    ckpt = load_checkpoint(paths["last"]) if config.resume else None
    if ckpt is not None:
        config = replace(config_from_dict(ckpt["config"]), **{k: getattr(config, k) for k in RUN_FIELDS})
        check_config(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)

    pairs = load_task(config)
    if ckpt is not None:
        src_vocab, tgt_vocab = D.Vocab.from_dict(ckpt["vocab"]["src"]), D.Vocab.from_dict(ckpt["vocab"]["tgt"])
    else:
        src_vocab, tgt_vocab = D.Vocab.build(s for s, _ in pairs["train"]), D.Vocab.build(t for _, t in pairs["train"])
    train_set = D.ParallelDataset(pairs["train"], src_vocab, tgt_vocab)
    if not len(train_set) or not pairs["valid"]:
        raise ValueError(f"need training and validation pairs, got {len(train_set)} and {len(pairs['valid'])}")
    model = build_model(config, len(src_vocab), len(tgt_vocab)).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, noam_lambda(config.d_model, config.warmup, config.lr_factor))
    loss_fn = nn.CrossEntropyLoss(ignore_index=D.PAD_ID, label_smoothing=config.label_smoothing)
    step, epoch, position, best_bleu = 0, 0, 0, -math.inf
    # The global batch (what one optimizer step sees) is fixed when a run starts; a resumed run
    # keeps it whatever its number of processes, so it continues with the very same batches.
    parts = ctx.world_size * config.accumulate  # micro-batches in a global batch
    batch_size = config.batch_size or (None if config.max_tokens else 128)
    global_batch = {"batch_size": batch_size and batch_size * parts,
                    "max_tokens": config.max_tokens and config.max_tokens * parts}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        states = ckpt.get("rng_ranks") or [ckpt["rng"]]
        set_rng_state(states[min(ctx.rank, len(states) - 1)])
        if ctx.rank >= len(states):
            torch.manual_seed(_rank_seed(config.seed, ckpt["step"], ctx.rank))
        step, epoch, position = ckpt["step"], ckpt["data"]["epoch"], ckpt["data"]["batch"]
        global_batch = ckpt["data"].get("global_batch", global_batch)
        best_bleu = ckpt.get("best_bleu", -math.inf)
    elif ctx.rank > 0:
        torch.manual_seed(_rank_seed(config.seed, 0, ctx.rank))  # after the (broadcast) initialisation
    sampler = D.LengthBucketSampler(train_set.lengths, batch_size=global_batch["batch_size"],
                                    max_tokens=global_batch["max_tokens"], seed=config.seed,
                                    num_replicas=ctx.world_size, rank=ctx.rank)
    ddp = distributed.wrap(FlatForward(model), ctx) if ctx.distributed else model

    def checkpoint(valid: dict, rng_ranks: list) -> dict:
        return {"format": FORMAT, "version": VERSION, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_ranks[0],
                "rng_ranks": rng_ranks, "data": {"epoch": epoch, "batch": position, "global_batch": global_batch,
                                                 "world_size": ctx.world_size},
                "config": asdict(config), "vocab": {"src": src_vocab.to_dict(), "tgt": tgt_vocab.to_dict()},
                "best_bleu": best_bleu, "valid": valid}

    log_file, log = _open_log(paths["log"], step) if ctx.is_main else (None, None)
    bar = tqdm(total=config.steps, initial=step, disable=not (config.progress and ctx.is_main), dynamic_ncols=True,
               desc="train")
    say = bar.write if ctx.is_main else (lambda message: None)  # tqdm.write ignores disable
    if ctx.distributed or config.accumulate > 1:
        say(f"{ctx.world_size} process(es) x {config.accumulate} micro-batch(es) a step; global batch: "
                  + ", ".join(f"{k} {v}" for k, v in global_batch.items() if v))
    losses, valid, batches = [], {}, None
    tokens = train_seconds = 0.0
    stopped_by, start = "steps", time.perf_counter()
    try:
        while step < config.steps:
            if batches is None:
                sampler.set_epoch(epoch)
                batches = list(sampler)
            if position >= len(batches):
                epoch, position, batches = epoch + 1, 0, None
                continue
            micro = [flat_collate([train_set[i] for i in items])
                     for items in split_batch(batches[position], config.accumulate)]
            micro = [FlatBatch(*(t.to(ctx.device) for t in mb)) for mb in micro]
            position += 1
            lr = optimizer.param_groups[0]["lr"]
            tic = time.perf_counter()
            share = sampling_share(step, config.steps, config.scheduled_sampling)
            loss = train_step(ddp, micro, optimizer, loss_fn, config.clip_norm, share, ctx, config.precision)
            scheduler.step()
            step += 1
            over_time = config.time_limit is not None and time.perf_counter() - start > config.time_limit
            batch_tokens, over_time = distributed.all_sum([sum(mb.num_tokens for mb in micro), over_time], ctx)
            seconds = time.perf_counter() - tic
            tokens, train_seconds = tokens + batch_tokens, train_seconds + seconds
            losses.append(loss)
            row = {"step": step, "loss": f"{loss:.6f}", "lr": f"{lr:.6g}", "tokens_per_s": f"{batch_tokens / seconds:.0f}"}
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens / train_seconds:.0f}")
            if over_time:  # every rank stops at the same step: the flag was summed over all of them
                stopped_by = "time_limit"
            if step % config.eval_every == 0 or step == config.steps or stopped_by == "time_limit":
                valid = evaluate_sharded(model, src_vocab, tgt_vocab, pairs["valid"], config.max_len, ctx)
                row.update(valid_bleu=f"{valid['bleu']:.2f}", valid_em=f"{valid['exact_match']:.2f}")
                say(f"step {step}: valid BLEU {valid['bleu']:.2f}, exact match {valid['exact_match']:.1f}%")
                rng_ranks = distributed.gather_shards([rng_state()], ctx)
                improved = valid["bleu"] > best_bleu
                best_bleu = max(best_bleu, valid["bleu"])
                if ctx.is_main:
                    if improved:
                        save_checkpoint(checkpoint(valid, rng_ranks), paths["best"])
                    save_checkpoint(checkpoint(valid, rng_ranks), paths["last"])
            if log is not None:
                log.writerow(row)
                log_file.flush()
            if stopped_by == "time_limit":
                break
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()

    distributed.barrier(ctx)  # rank 0 has written best.pt before anyone reads it
    if paths["best"].exists():  # report, plot and return the best weights, not the last
        model.load_state_dict(load_checkpoint(paths["best"])["model"])
    model.cpu().eval()
    if ctx.is_main:
        plot_curves(paths["log"], paths["curves"])
        example = pairs["valid"][0][0]
        weights, src_tokens, out_tokens = attention_example(model, src_vocab, tgt_vocab, example, config.max_len)
        plot_attention(weights, src_tokens, out_tokens, paths["attention"], title="cross-attention, last decoder layer")
    return TrainResult(config, model, src_vocab, tgt_vocab, step, losses, valid, best_bleu,
                       tokens / train_seconds if train_seconds else 0.0, train_seconds, stopped_by, paths)
