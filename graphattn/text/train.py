r"""Training of :class:`~graphattn.text.model.Seq2Seq` translation models and of
:class:`~graphattn.nn.CausalLM` language models (``task="lm"``), in one loop.

One step: a flat batch of sentence pairs (or text sequences) of similar length
(:class:`~graphattn.loader.LengthBucketSampler`, no padding is computed), label-smoothed
cross-entropy, Adam with the Noam schedule (:func:`noam_lambda` in ``LambdaLR``), gradient
clipping and, for translation, optional scheduled sampling. Every ``eval_every`` steps the model
is validated: a translation model translates the validation set greedily (BLEU and exact match),
a language model is scored by its perplexity on the validation text. The scores go to the CSV
log and the best checkpoint (highest BLEU, lowest perplexity) is kept. ``train(TrainConfig(...))``
returns a :class:`TrainResult`; ``graphattn train`` maps its flags onto :class:`TrainConfig` one
to one. The tokenizers are trained on the training text when a run starts (Hugging Face
``tokenizers``, :mod:`graphattn.text.tokenizer`) and stored in every checkpoint.

Before the first step the data is checked for what a model cannot learn, with a warning for
each problem found (:mod:`graphattn.text.diagnostics`): validation tokens the tokenizer does not
know, sentences longer than ``max_len``; after the last, empty translations.

Files written to ``config.run.out``: ``last.pt`` and ``best.pt`` (see :mod:`graphattn.text.checkpoint`),
``log.csv``, ``curves.png`` (loss, lr, validation scores) and, for translation, ``attention.png``
(the last decoder layer's cross-attention on one validation sentence). Files are read and
checked before anything is written, so bad input never costs an existing checkpoint.

Under ``torchrun --nproc_per_node=W`` the same call trains data-parallel
(:mod:`graphattn.distributed`): every rank takes an interleaved share of each global batch of
``batch_size * W * accumulate`` pairs, ``DistributedDataParallel`` averages the gradients, the
loss is normalised by the global number of target tokens (so ``W`` processes with batch ``b``
compute exactly the step of one process with batch ``W b``), validation is sharded and gathered,
and only rank 0 writes files. ``accumulate=K`` sums the gradients of ``K`` micro-batches before
each step.

Messages (validation scores, the batch layout) go to the ``graphattn.text.train`` logger, progress to
a tqdm bar; the library sets no thread count, no global seed that outlives the call (the run's
random streams live in ``torch.random.fork_rng``) and no logging handler. The global batch is part of the run: a checkpoint resumes in any number of processes
with the same global batches, split into smaller or larger shares.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphattn import distributed
from graphattn.loader import LengthBucketSampler
from graphattn.text.checkpoint import FORMAT, VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from graphattn.text.build import build_model, build_tokenizers, checkpoint_tokenizers, load_task
from graphattn.text.config import TrainConfig, check_config, config_from_dict
from graphattn.text.data import FlatBatch, ParallelDataset, flat_collate
from graphattn.text.diagnostics import data_warnings, empty_warning
from graphattn.text.evaluation import translation_scores_sharded
from graphattn.text.lm import LMDataset, lm_collate, perplexity
from graphattn.text.plots import attention_example, plot_attention, plot_curves
from graphattn.text.runs import RunLog, check_out, check_resume, new_run_id, resume_config
from graphattn.text.tokenizer import PAD_ID, Tokenizer
from graphattn.utils.batch import local_positions
from graphattn.utils.checks import check_int

__all__ = ["TrainResult", "noam_lambda", "sampling_share", "scheduled_sampling_inputs", "split_batch", "FlatForward",
           "train_step", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns; ``model`` holds the best weights by the validation metric."""

    config: TrainConfig
    model: nn.Module  # a Seq2Seq (TorchSeq2Seq), or a CausalLM for task "lm"
    src_tokenizer: Optional[Tokenizer]  # None for a language model
    tgt_tokenizer: Tokenizer  # the target side's, or the language model's
    step: int  # optimizer steps done in total (resumed runs included)
    losses: list  # the loss of each step of this run
    valid: dict  # scores of the last validation: bleu, exact_match, n, empty (lm: perplexity, nll, tokens)
    metric: str  # "bleu" (translation) or "perplexity" (lm)
    best: float  # best validation score by that metric (BLEU: highest, perplexity: lowest)
    tokens_per_s: float  # source + target (lm: input) tokens per second of training, validation excluded
    train_seconds: float
    stopped_by: str  # "steps" or "time_limit"
    paths: dict = field(default_factory=dict)  # last, best, log, curves (and attention for translation)
    valid_seconds: float = 0.0  # wall-clock seconds of the loop spent validating (and writing checkpoints)

    @property
    def best_bleu(self) -> float:
        """Best validation BLEU of a translation run (nan for a language model)."""
        return self.best if self.metric == "bleu" else math.nan

    @property
    def tokenizer(self) -> Tokenizer:
        """The language model's tokenizer (the target side's for translation)."""
        return self.tgt_tokenizer


# --- Pure pieces -------------------------------------------------------------------------------


def noam_lambda(d_model: int, warmup: int, factor: float = 1.0) -> Callable[[int], float]:
    r"""The Noam rate :math:`f\, d^{-1/2} \min(s^{-1/2},\ s\, w^{-3/2})` as a function of the step.

    Hand it to ``LambdaLR`` with the optimizer's ``lr=1.0``. ``LambdaLR`` asks for step 0 when
    it is built, where the formula divides by zero; step 0 gets the rate of step 1.
    """
    check_int("d_model", d_model, 1)
    check_int("warmup", warmup, 1)
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


# --- One step ------------------------------------------------------------------------------------


def _open_log(run: "_Run") -> RunLog:
    """The run's CSV log (:class:`~graphattn.text.runs.RunLog`); resumed, from the checkpoint's step."""
    return RunLog(run.paths, run.run_id, run.step if run.config.run.resume else None)


class FlatForward(nn.Module):
    """``forward = model.forward_flat``: what ``DistributedDataParallel`` wraps, since DDP hooks
    only ``forward`` and the padded ``forward`` of ``Seq2Seq`` would undo the flat batches."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model.forward_flat(*inputs)


def split_batch(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` dealt into ``parts`` interleaved micro-batches (``items[j::parts]``), empty ones dropped.

    A batch's examples are sorted by length, so dealing them gives micro-batches of about equal
    cost, as :class:`~graphattn.loader.LengthBucketSampler` deals a global batch to the ranks.
    """
    return [list(items[j::parts]) for j in range(parts) if items[j::parts]]


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model.model if isinstance(model, FlatForward) else model


def train_step(model: nn.Module, batch, optimizer, loss_fn, clip_norm: float, share: float = 0.0,
               ctx: Optional[distributed.Context] = None, precision: str = "fp32") -> float:
    """One optimizer step; the loss of the whole (global) batch, a mean over its target tokens.

    ``batch`` is a :class:`FlatBatch` (or an :class:`~graphattn.text.lm.LMBatch`) or a list of
    them (micro-batches whose gradients are summed, gradient accumulation). ``model`` is a
    :class:`~graphattn.text.model.Seq2Seq` (a :class:`~graphattn.nn.CausalLM`) or, across
    processes, ``DistributedDataParallel(FlatForward(model))``. ``loss_fn`` returns the mean
    over a micro-batch's tokens; each micro-batch is weighted by its tokens, and the gradients
    are divided by the tokens of all ranks' micro-batches together, so the step equals one
    process's step on the union of the batches. ``share``: scheduled-sampling share of inputs.
    ``precision="bf16"``: forward and loss under ``torch.autocast`` in bfloat16.
    """
    ctx = ctx or distributed.Context()
    micro = list(batch) if isinstance(batch, list) else [batch]
    if not micro:
        raise ValueError("train_step needs at least one micro-batch")
    if share > 0 and not all(isinstance(mb, FlatBatch) for mb in micro):
        raise ValueError("scheduled sampling (share > 0) needs translation batches (FlatBatch)")
    raw = _unwrap(model)
    forward = model if isinstance(model, nn.parallel.DistributedDataParallel) else raw.forward_flat
    raw.train()
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    loss_sum, tokens = 0.0, 0
    for i, mb in enumerate(micro):
        inputs = mb.inputs
        if share > 0:
            with torch.no_grad(), autocast:
                guess = raw.forward_flat(*inputs).argmax(-1)
            inputs = (mb.src, mb.ptr_src, scheduled_sampling_inputs(mb.tgt_in, mb.ptr_tgt, guess, share), mb.ptr_tgt)
        n = mb.labels.numel()
        # DDP all-reduces the gradients during the last micro-batch's backward only.
        with distributed.no_sync(model, sync=i == len(micro) - 1):
            with autocast:
                # Seq2Seq returns log-probabilities, which CrossEntropyLoss's log_softmax leaves
                # unchanged; CausalLM returns logits.
                loss = loss_fn(forward(*inputs), mb.labels) * n
            loss.backward()
        loss_sum, tokens = loss_sum + loss.item(), tokens + n
    loss_sum, tokens = distributed.all_sum([loss_sum, tokens], ctx)
    # Gradients now hold the sum over this rank's tokens averaged over ranks (DDP divides by W):
    # scale to the mean over every token of the global batch.
    scale = ctx.world_size / tokens
    for p in raw.parameters():
        if p.grad is not None:
            p.grad.mul_(scale)
    if clip_norm > 0:
        nn.utils.clip_grad_norm_(raw.parameters(), clip_norm)
    optimizer.step()
    return loss_sum / tokens


def _rank_seed(seed: int, step: int, rank: int) -> int:
    """A seed for rank ``rank``'s dropout stream: different ranks must not drop the same units."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2 ** 63)


def train(config: TrainConfig, given: Optional[Sequence[str]] = None) -> TrainResult:
    """Train as ``config`` says; with ``config.run.resume``, continue from ``out/last.pt`` exactly.

    A folder that holds a run is refused to a new run unless ``config.run.overwrite`` (see
    :mod:`graphattn.text.runs`). On resume the checkpoint's configuration is used, except for the
    fields of :data:`~graphattn.text.runs.SAFE_ON_RESUME` (steps, time_limit, eval_every,
    accumulate, device, precision, dist_timeout...), which come from ``config``; any other field
    named in ``given`` (default: the fields that differ from :class:`TrainConfig`'s defaults) and
    set otherwise than in the checkpoint raises ``ValueError``. Started by ``torchrun``, the processes train together (see the
    module's docstring); a rank that dies or hangs ends the others with a
    :class:`~graphattn.distributed.DistributedError` after ``dist_timeout`` seconds.
    """
    check_config(config)
    ctx = distributed.init(config.run.device, config.run.dist_timeout)
    devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    try:
        # The run seeds and steps its own random streams; the caller's come back afterwards.
        with distributed.guard(ctx), torch.random.fork_rng(devices=devices):
            return _train(config, ctx, given)
    finally:
        distributed.shutdown(ctx)


@dataclass
class _Run:
    """Everything a run changes as it goes, and what it was built from."""

    config: TrainConfig
    ctx: distributed.Context
    paths: dict
    data: dict  # train/valid pairs (translation) or documents (lm)
    src_tokenizer: Optional[Tokenizer]
    tgt_tokenizer: Tokenizer
    train_set: object  # ParallelDataset or LMDataset
    valid_set: Optional[LMDataset]  # lm only: translation validates on the pairs
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    global_batch: dict
    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of the epoch already done
    best: float = -math.inf  # best score so far, higher is better (BLEU, or minus the perplexity)
    run_id: str = field(default_factory=new_run_id)  # in every checkpoint and log row of the run
    log: Optional[RunLog] = None  # rank 0's CSV log while the loop runs

    @property
    def lm(self) -> bool:
        return self.config.kind == "lm"

    def checkpoint(self, valid: dict, rng_ranks: list) -> dict:
        if self.lm:
            vocab = {"text": self.tgt_tokenizer.to_dict()}
            best = {"metric": "perplexity", "value": -self.best}
        else:
            vocab = {"src": self.src_tokenizer.to_dict(), "tgt": self.tgt_tokenizer.to_dict()}
            best = {"metric": "bleu", "value": self.best}
        return {"format": FORMAT, "version": VERSION, "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_ranks[0], "rng_ranks": rng_ranks,
                "data": {"epoch": self.epoch, "batch": self.position, "global_batch": self.global_batch,
                         "world_size": self.ctx.world_size},
                "config": self.config.to_flat(), "vocab": vocab, "best": best, "valid": valid, "run_id": self.run_id}


def _train(config: TrainConfig, ctx: distributed.Context, given: Optional[Sequence[str]]) -> TrainResult:
    out = Path(config.run.out)
    paths = {"last": out / "last.pt", "best": out / "best.pt", "log": out / "log.csv", "curves": out / "curves.png"}
    check_out(config)
    ckpt = load_checkpoint(paths["last"]) if config.run.resume else None
    if ckpt is not None:
        config = resume_config(config_from_dict(ckpt["config"]), config, given)
        check_config(config)
        check_resume(ckpt, paths)
    if config.kind == "translation":
        paths["attention"] = out / "attention.png"
    torch.manual_seed(config.run.seed)  # inside train()'s fork_rng: the caller's generator is restored
    run = _build(config, ctx, paths, ckpt)  # reads and checks every file before anything is written
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for message in _data_warnings(run):
            logger.warning("%s", message)
    losses, valid, stopped_by, tokens, seconds, valid_seconds = _loop(run)
    distributed.barrier(ctx)  # rank 0 has written best.pt before anyone reads it
    if paths["best"].exists():  # report, plot and return the best weights, not the last
        run.model.load_state_dict(load_checkpoint(paths["best"])["model"])
    run.model.cpu().eval()
    if ctx.is_main:
        message = None if run.lm else empty_warning(valid.get("empty", 0), valid.get("n", 0))
        if message:
            logger.warning("%s", message)
        _plot(run)
    metric, best = ("perplexity", -run.best) if run.lm else ("bleu", run.best)
    return TrainResult(run.config, run.model, run.src_tokenizer, run.tgt_tokenizer, run.step, losses, valid, metric,
                       best, tokens / seconds if seconds else 0.0, seconds, stopped_by, paths, valid_seconds)


def _tokenizers(config: TrainConfig, ctx: distributed.Context, data: dict, ckpt: Optional[dict]):
    """The run's tokenizers: from the checkpoint when resuming, else trained on the training text
    by rank 0 and handed to the others (every rank must use the very same ids)."""
    if ckpt is not None:
        return checkpoint_tokenizers(ckpt, config)
    trained = build_tokenizers(config, data) if ctx.is_main else None
    if not ctx.distributed:
        return trained
    dicts = [None if t is None else t.to_dict() for t in trained] if trained else []
    shared = distributed.gather_shards([dicts] if ctx.is_main else [], ctx)[0]
    return tuple(None if d is None else Tokenizer.from_dict(d) for d in shared)


def _build(config: TrainConfig, ctx: distributed.Context, paths: dict, ckpt: Optional[dict]) -> _Run:
    """Data, tokenizers, model, optimizer and schedule; from the checkpoint when resuming."""
    data = load_task(config)
    src_tok, tgt_tok = _tokenizers(config, ctx, data, ckpt)
    if config.kind == "lm":
        context = config.data.context
        train_set, valid_set = LMDataset(data["train"], tgt_tok, context), LMDataset(data["valid"], tgt_tok, context)
        if not len(train_set) or not len(valid_set):
            raise ValueError(f"need training and validation text, got {train_set.num_tokens} and "
                             f"{valid_set.num_tokens} tokens to predict")
    else:
        train_set, valid_set = ParallelDataset(data["train"], src_tok, tgt_tok, config.data.max_len), None
        if not len(train_set) or not data["valid"]:
            raise ValueError(f"need training and validation pairs, got {len(train_set)} and {len(data['valid'])}")
    model = build_model(config, None if src_tok is None else len(src_tok), len(tgt_tok)).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    rate = noam_lambda(config.model.d_model, config.optim.warmup, config.optim.lr_factor)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    # The global batch (what one optimizer step sees) is fixed when a run starts; a resumed run
    # keeps it whatever its number of processes, so it continues with the very same batches.
    parts = ctx.world_size * config.optim.accumulate  # micro-batches in a global batch
    batch_size = config.optim.batch_size or (None if config.optim.max_tokens else 16 if config.kind == "lm" else 128)
    global_batch = {"batch_size": batch_size and batch_size * parts,
                    "max_tokens": config.optim.max_tokens and config.optim.max_tokens * parts}
    run = _Run(config, ctx, paths, data, src_tok, tgt_tok, train_set, valid_set, model, optimizer, scheduler,
               global_batch)
    if ckpt is not None:
        _restore(run, ckpt)
    elif ctx.rank > 0:
        torch.manual_seed(_rank_seed(config.run.seed, 0, ctx.rank))  # after the (broadcast) initialisation
    return run


def _restore(run: _Run, ckpt: dict) -> None:
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    states = ckpt.get("rng_ranks") or [ckpt["rng"]]
    set_rng_state(states[min(run.ctx.rank, len(states) - 1)])
    if run.ctx.rank >= len(states):
        torch.manual_seed(_rank_seed(run.config.run.seed, ckpt["step"], run.ctx.rank))
    run.step, run.epoch, run.position = ckpt["step"], ckpt["data"]["epoch"], ckpt["data"]["batch"]
    run.run_id = ckpt.get("run_id") or run.run_id  # checkpoints of earlier releases had none
    run.global_batch = ckpt["data"].get("global_batch", run.global_batch)
    best = ckpt.get("best") or {"metric": "bleu", "value": ckpt.get("best_bleu", -math.inf)}  # version 1: best_bleu
    run.best = -best["value"] if best["metric"] == "perplexity" else best["value"]


def _data_warnings(run: _Run) -> list:
    """What the data cannot teach: see :func:`~graphattn.text.diagnostics.data_warnings`."""
    if run.lm:
        return data_warnings(None, run.tgt_tokenizer, valid_texts=run.data["valid"])
    return data_warnings(run.src_tokenizer, run.tgt_tokenizer, run.data["valid"], run.train_set, run.config.data.max_len)


def _batches(run: _Run, sampler: LengthBucketSampler):
    """The micro-batches of each step from where the run stands, epoch after epoch, forever."""
    collate = lm_collate if run.lm else flat_collate
    while True:
        sampler.set_epoch(run.epoch)
        batches = list(sampler)
        while run.position < len(batches):
            items = batches[run.position]
            run.position += 1
            yield [collate([run.train_set[i] for i in part]).to(run.ctx.device)
                   for part in split_batch(items, run.config.optim.accumulate)]
        run.epoch, run.position = run.epoch + 1, 0


def _loop(run: _Run):
    """Steps until ``optim.steps`` or the time limit; validation and checkpoints on the way."""
    config, optim, ctx = run.config, run.config.optim, run.ctx
    sampler = LengthBucketSampler(run.train_set.lengths, batch_size=run.global_batch["batch_size"],
                                  max_tokens=run.global_batch["max_tokens"], seed=config.run.seed,
                                  num_replicas=ctx.world_size, rank=ctx.rank)
    ddp = distributed.wrap(FlatForward(run.model), ctx) if ctx.distributed else run.model
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID, label_smoothing=optim.label_smoothing)
    if ctx.is_main and (ctx.distributed or optim.accumulate > 1):
        logger.info("%d process(es) x %d micro-batch(es) a step; global batch: %s", ctx.world_size, optim.accumulate,
                    ", ".join(f"{k} {v}" for k, v in run.global_batch.items() if v))
    run.log = _open_log(run) if ctx.is_main else None
    # tqdm draws in a terminal only (disable=None); elsewhere (a file, a pipe) a line every few steps
    bar = tqdm(total=optim.steps, initial=run.step, disable=None if config.run.progress and ctx.is_main else True,
               dynamic_ncols=True, desc="train")
    every = max(1, min(config.run.eval_every, optim.steps // 20)) if config.run.progress and ctx.is_main and bar.disable else 0
    losses, valid, stopped_by, tokens, seconds, start = [], {}, "steps", 0.0, 0.0, time.perf_counter()
    last_valid, valid_seconds = start, 0.0
    try:
        batches = _batches(run, sampler)
        while run.step < optim.steps:
            micro = next(batches)
            lr, tic = run.optimizer.param_groups[0]["lr"], time.perf_counter()
            share = sampling_share(run.step, optim.steps, optim.scheduled_sampling)
            loss = train_step(ddp, micro, run.optimizer, loss_fn, optim.clip_norm, share, ctx, config.run.precision)
            run.scheduler.step()
            run.step += 1
            now = time.perf_counter()
            over_time = config.run.time_limit is not None and now - start > config.run.time_limit
            due = config.run.eval_seconds is not None and now - last_valid >= config.run.eval_seconds
            # Summed so that every rank takes the same decisions, whatever its clock says.
            batch_tokens, over_time, due = distributed.all_sum([sum(mb.num_tokens for mb in micro), over_time, due], ctx)
            took = time.perf_counter() - tic
            tokens, seconds = tokens + batch_tokens, seconds + took
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens / seconds:.0f}")
            stopped_by = "time_limit" if over_time else stopped_by  # every rank agrees: the flag was summed
            row = {"step": run.step, "loss": f"{loss:.6f}", "lr": f"{lr:.6g}", "tokens_per_s": f"{batch_tokens / took:.0f}"}
            if run.step % config.run.eval_every == 0 or run.step == optim.steps or over_time or due:
                valid = _validate(run)
                row.update(_log_scores(valid))
                last_valid = time.perf_counter()
                valid_seconds += last_valid - now
            if run.log is not None:
                run.log.write(row)
            if every and run.step % every == 0:
                logger.info("step %d/%d: loss %.3f, lr %.2e, %.0f tokens/s", run.step, optim.steps, loss, lr,
                            tokens / seconds)
            if over_time:
                break
    finally:
        bar.close()
        if run.log is not None:
            run.log.close()
    return losses, valid, stopped_by, tokens, seconds, valid_seconds


def _log_scores(valid: dict) -> dict:
    if "perplexity" in valid:
        return {"valid_ppl": f"{valid['perplexity']:.4f}"}
    return {"valid_bleu": f"{valid['bleu']:.2f}", "valid_em": f"{valid['exact_match']:.2f}"}


def _validate(run: _Run) -> dict:
    """Validation scores; the last and (if better) the best checkpoint are written by rank 0."""
    ctx = run.ctx
    if run.lm:
        batch_size = run.global_batch["batch_size"] or 16
        valid = perplexity(run.model, run.valid_set, max(1, batch_size // ctx.world_size), ctx)
        score = -valid["perplexity"]
        if ctx.is_main:
            logger.info("step %d: valid perplexity %.3f (%.4f nats a token)", run.step, valid["perplexity"], valid["nll"])
    else:
        pairs = run.data["valid"][:run.config.run.valid_subset]  # a fixed subset bounds the cost of greedy decoding
        valid = translation_scores_sharded(run.model, run.src_tokenizer, run.tgt_tokenizer, pairs, run.config.data.max_len, ctx)
        score = valid["bleu"]
        if ctx.is_main:
            unit = "" if valid["bleu_tokenize"] == "13a" else f" ({valid['bleu_tokenize']})"
            logger.info("step %d: valid BLEU%s %.2f, exact match %.1f%%", run.step, unit, valid["bleu"], valid["exact_match"])
    rng_ranks = distributed.gather_shards([rng_state()], ctx)
    improved = score > run.best
    run.best = max(run.best, score)
    if ctx.is_main:
        if improved:
            save_checkpoint(run.checkpoint(valid, rng_ranks), run.paths["best"])
        save_checkpoint(run.checkpoint(valid, rng_ranks), run.paths["last"])
        if run.log is not None:
            run.log.promote()  # the run's first checkpoint: its log and files now replace another run's
    return valid


def _plot(run: _Run) -> None:
    plot_curves(run.paths["log"], run.paths["curves"])
    if run.lm:
        return
    example = run.data["valid"][0][0]
    weights, src_tokens, out_tokens = attention_example(run.model, run.src_tokenizer, run.tgt_tokenizer, example,
                                                        run.config.data.max_len)
    plot_attention(weights, src_tokens, out_tokens, run.paths["attention"], title="cross-attention, last decoder layer")
