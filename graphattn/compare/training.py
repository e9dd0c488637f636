r"""The same encoder classifier trained under each pattern on a generated ListOps task.

Every pattern gets the same data, seeds, model and step budget; a row reports test accuracy
(mean and spread over seeds), tokens/s, peak memory, edges and maximum path length. A learned
span (:class:`~graphattn.nn.LearnedSpan`) is not a pattern but a model option: its rows come
from ``learned_spans`` and report the spans its heads learned.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphattn import patterns as P
from graphattn.compare import listops
from graphattn.compare.classifier import SequenceClassifier
from graphattn.loader import LengthBucketSampler
from graphattn.utils.batch import pack_sequences
from graphattn.utils.bench import peak_memory_mib

__all__ = ["LISTOPS_TASK", "LRA_TASK", "TrainSettings", "TRAIN_COLUMNS", "TRAIN_HEADERS", "default_train_patterns",
           "default_learned_spans", "span_name", "train_one", "train_table", "summarise"]

TRAIN_COLUMNS = ["pattern", "accuracy_text", "seeds", "relative_speed", "tokens_per_s", "peak_mib",
                 "edges_per_example", "max_path_length", "learned_span_text"]
TRAIN_HEADERS = ["pattern", "accuracy % (mean ± std)", "seeds", "tokens/s vs dense", "tokens/s", "peak MiB",
                 "edges per example", "max path length", "learned span per layer: mean (range)"]

# The default ListOps task: flat MAX or MIN over as many digits as the length allows (max_args
# is no limit in practice, so --max-len can grow), of which about three are uniform and the rest
# the operator's identity. The value rests on a few digits anywhere in up to 512 tokens, which a
# 2-layer model learns in a few hundred steps when it can see them; the Long Range Arena's nested
# distribution (LRA_TASK) needs far longer training than this comparison can afford.
LISTOPS_TASK = {"max_depth": 1, "max_args": 1 << 16, "operators": ("[MAX", "[MIN"), "informative": 3.0}
LRA_TASK: dict = {}  # listops.generate's defaults


@dataclass
class TrainSettings:
    """The recipe every pattern is trained with: same data, seeds, model and step budget."""

    steps: int = 200  # optimiser steps per pattern and seed
    batch_size: int = 16  # expressions per step
    lr: float = 5e-3  # AdamW peak rate, linear warm-up then linear decay to 0
    warmup: int = 30  # warm-up steps
    d_model: int = 64  # width of the classifier
    num_heads: int = 4  # attention heads
    num_layers: int = 2  # encoder layers: the reach of a local pattern is num_layers hops
    dim_feedforward: int = 128  # feed-forward width
    dropout: float = 0.0  # 0 lets SDPA take its fused CPU kernel; generated data does not overfit here
    span_penalty: float = 1e-3  # weight of the learned span's L1 cost (Adam makes even a small one felt)
    min_len: int = 32  # shortest expression
    max_len: int = 512  # longest expression
    num_train: int = 4000  # training expressions
    num_test: int = 500  # test expressions
    task: dict = field(default_factory=lambda: dict(LISTOPS_TASK))  # keyword arguments of listops.generate




def _collate(items: list) -> tuple[Tensor, Tensor, Tensor]:
    tokens, ptr = pack_sequences([t for t, _ in items])
    return tokens, ptr, torch.tensor([y for _, y in items])


def _batches(data: list, batch_size: int, seed: int):
    """Shuffled batches of expressions of similar length, epoch after epoch, so that a padded
    dense batch wastes little (the sparse backends never pad)."""
    sampler = LengthBucketSampler([t.numel() for t, _ in data], batch_size=batch_size, seed=seed, drop_last=True,
                                  bucket_batches=8)
    for epoch in range(1 << 30):
        sampler.set_epoch(epoch)
        for batch in sampler:
            yield _collate([data[j] for j in batch])


def default_train_patterns(max_len: int) -> dict:
    """The patterns of the training table for expressions of up to ``max_len`` tokens."""
    w = max(4, max_len // 64)
    specs = ["dense", f"window:{w}", f"dilated:{w}:4", f"block:{4 * w}", f"bigbird:{w}:2:{max(1, w // 2)}:0",
             f"causal&window:{w}"]
    return {spec: P.parse(spec) for spec in specs}


def default_learned_spans(max_len: int) -> list[int]:
    """The learned spans of the training table: up to ``8 w`` positions."""
    return [8 * max(4, max_len // 64)]


def span_name(max_span: int) -> str:
    """The row name of a learned span (a model option, not a pattern name)."""
    return f"learned span <= {max_span}"


def _fit(model: SequenceClassifier, train: list, seed: int, cfg: TrainSettings, desc: str, progress: bool):
    """Train for ``cfg.steps``; returns (tokens seen, seconds of training)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * max(0.0, 1 - s / cfg.steps))
    tokens_seen, train_time = 0, 0.0
    model.train()
    batches = _batches(train, cfg.batch_size, seed)
    for _ in tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False):
        tokens, ptr, labels = next(batches)
        start = time.perf_counter()
        loss = F.cross_entropy(model(tokens, ptr), labels)
        if model.spans is not None:
            loss = loss + cfg.span_penalty * sum(s.penalty() for s in model.spans)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        train_time += time.perf_counter() - start
        tokens_seen += tokens.numel()
    return tokens_seen, train_time


@torch.no_grad()
def _accuracy(model: SequenceClassifier, test: list) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(test), 64):  # test is sorted by length, so dense pads little here too
        tokens, ptr, labels = _collate(test[i:i + 64])
        correct += int((model(tokens, ptr).argmax(-1) == labels).sum())
    return 100.0 * correct / len(test)


def train_one(name: str, pattern: Optional[P.Pattern], train: list, test: list, seed: int, settings: TrainSettings,
              progress: bool = True, stats_cache: Optional[dict] = None, learned_span: Optional[int] = None) -> dict:
    """Train the classifier under one pattern (or with a learned span); test accuracy, speed, memory.

    ``test`` should be sorted by length (as :func:`train_table` does), so that evaluation pads little.
    """
    stats_cache = {} if stats_cache is None else stats_cache
    cfg = settings
    torch.manual_seed(seed)  # model init; the caller scopes the global generator (train_table forks it)
    model = SequenceClassifier(len(listops.VOCAB), 10, pattern, d_model=cfg.d_model, num_heads=cfg.num_heads,
                               num_layers=cfg.num_layers, dim_feedforward=cfg.dim_feedforward,
                               dropout=cfg.dropout, learned_span=learned_span)
    tokens_seen, train_time = _fit(model, train, seed, cfg, f"{name} seed {seed}", progress)
    # Peak memory of one step on the longest training batch: the figure that decides what fits.
    tokens, ptr, labels = _collate(sorted(train, key=lambda item: item[0].numel())[-cfg.batch_size:])
    peak = peak_memory_mib(lambda: F.cross_entropy(model(tokens, ptr), labels).backward())
    accuracy = _accuracy(model, test)
    key = repr(model.pattern)
    if key not in stats_cache:  # the pattern's statistics do not depend on the seed
        test_ptr = _collate(test)[1]
        s = model.pattern.stats(test_ptr, num_layers=len(model.layers))
        stats_cache[key] = {"edges_per_example": s["num_edges"] / (test_ptr.numel() - 1),
                            "max_path_length": s["max_path_length"]}
    out = {"pattern": name, "seed": seed, "accuracy": accuracy, "tokens_per_s": tokens_seen / train_time,
           "peak_mib": peak, **stats_cache[key]}
    if model.spans is not None:
        out["learned_spans"] = [[round(float(v), 1) for v in s.spans()] for s in model.spans]
    return out


def train_table(patterns: dict, seeds: Sequence[int], settings: Optional[TrainSettings] = None,
                progress: bool = True, learned_spans: Sequence[int] = ()) -> list:
    """Every pattern (and learned span) trained with the same data, seeds and step budget; one row
    per (pattern, seed). ``patterns`` maps row names to patterns or spec strings."""
    cfg = settings or TrainSettings()
    train = listops.listops_dataset(cfg.num_train, cfg.min_len, cfg.max_len, seed=1000, **cfg.task)
    test = listops.listops_dataset(cfg.num_test, cfg.min_len, cfg.max_len, seed=2000, **cfg.task)
    test.sort(key=lambda item: item[0].numel())
    jobs = [(name, P.as_pattern(p, name), None, seed) for name, p in patterns.items() for seed in seeds]
    jobs += [(span_name(s), None, s, seed) for s in learned_spans for seed in seeds]
    rows, cache = [], {}
    with torch.random.fork_rng():  # every run seeds the generator; the caller's comes back afterwards
        for name, pattern, span, seed in tqdm(jobs, desc="train", disable=not progress):
            rows.append(train_one(name, pattern, train, test, seed, cfg, progress, cache, learned_span=span))
    return rows


def summarise(rows: list) -> list:
    """Per pattern: accuracy mean and sample standard deviation over seeds, tokens/s relative to
    dense, and for a learned span the spans per layer (mean over heads and seeds, with the range)."""
    out = []
    dense_speed = statistics.mean(r["tokens_per_s"] for r in rows if r["pattern"] == "dense") \
        if any(r["pattern"] == "dense" for r in rows) else None
    for name in dict.fromkeys(r["pattern"] for r in rows):
        mine = [r for r in rows if r["pattern"] == name]
        acc = [r["accuracy"] for r in mine]
        speed = statistics.mean(r["tokens_per_s"] for r in mine)
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        text = f"{statistics.mean(acc):.1f}" + (f" ± {std:.1f}" if len(acc) > 1 else "")
        row = {"pattern": name, "accuracy": statistics.mean(acc), "accuracy_std": std, "accuracy_text": text,
               "seeds": len(acc),
               "tokens_per_s": speed, "relative_speed": speed / dense_speed if dense_speed else math.nan,
               "peak_mib": statistics.mean(r["peak_mib"] or 0 for r in mine),
               "edges_per_example": mine[0]["edges_per_example"], "max_path_length": mine[0]["max_path_length"]}
        if "learned_spans" in mine[0]:
            row["learned_spans"] = [r["learned_spans"] for r in mine]  # [seed][layer][head]
            per_layer = zip(*(r["learned_spans"] for r in mine))  # heads of every seed, layer by layer
            row["learned_span_text"] = "; ".join(
                f"L{i + 1} {statistics.mean(v):.0f} ({min(v):.0f}-{max(v):.0f})"
                for i, v in enumerate([h for seed in layer for h in seed] for layer in per_layer))
        out.append(row)
    return out
