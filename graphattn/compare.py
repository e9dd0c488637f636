r"""Which attention pattern for my data? Patterns measured side by side.

Two parts:

* :func:`stats_table`: for each pattern and length, the pattern's statistics (edges, density,
  keys per query, maximum path length, receptive field) beside the measured forward + backward
  time and peak memory of one attention layer, the scaling exponents fitted over ``n``, and the
  theoretical columns of Table 1 of "Attention Is All You Need". An LSTM and a Conv1d of the same
  width are reference rows.
* :func:`train_table`: the same encoder classifier trained under each pattern on a generated
  ListOps task (:mod:`graphattn.listops`) with the same seeds and step budget: test accuracy
  (mean and spread over seeds), tokens/s, peak memory, edges and maximum path length; a learned
  span (:class:`~graphattn.span.LearnedSpan`) reports the spans its heads learned.

Both write a markdown table, CSV and JSON, and plots (:func:`plot_scaling`, :func:`plot_lra`).
"""
from __future__ import annotations

import csv
import ctypes
import gc
import json
import math
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_mean_pool
from tqdm.auto import tqdm

from graphattn import listops
from graphattn import patterns as P
from graphattn.attention import GraphMultiheadAttention
from graphattn.sequence import local_positions, positional_encoding, ptr_to_batch, relative_positions
from graphattn.span import LearnedSpan
from graphattn.transformer import TransformerEncoderLayer

# Table 1 of "Attention Is All You Need": complexity per layer, sequential operations, maximum
# path length; r = keys per query, k = kernel size.
THEORY = {
    "dense": ("O(n^2 d)", "O(1)", "O(1)"),
    "window": ("O(r n d)", "O(1)", "O(n/r)"),
    "causal_window": ("O(r n d)", "O(1)", "inf (one direction)"),
    "dilated": ("O(r n d)", "O(1)", "inf (residues never mix)"),
    "block": ("O(r n d)", "O(1)", "inf (blocks never mix)"),
    "bigbird": ("O(r n d)", "O(1)", "O(1) (2 via global tokens)"),
    "lstm": ("O(n d^2)", "O(n)", "O(n)"),
    "conv1d": ("O(k n d^2)", "O(1)", "O(n/k)"),
}


# --------------------------------------------------------------------------- measuring


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fastest_seconds(fn: Callable[[], object], repeats: int = 2, min_seconds: float = 0.25,
                    max_repeats: int = 30) -> float:
    """Fastest wall time of ``fn`` over at least ``repeats`` calls (the caller warms up).

    The minimum is the figure least disturbed by other processes on the machine (as ``timeit``
    advises); calls shorter than ``min_seconds / repeats`` are repeated up to ``max_repeats``
    times, so that short and long calls are measured about equally well.
    """
    times = []
    while len(times) < max(1, repeats) or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory_mib(fn: Callable[[], object]) -> Optional[float]:
    """Peak resident memory that ``fn`` adds, in MiB (Linux; ``None`` elsewhere).

    torch's CPU allocator has no peak counter, so this resets the kernel's high-water mark
    (``/proc/self/clear_refs``) and reads it back: every temporary counts, as in a real run.
    """
    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the baseline is honest
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_bytes("VmRSS:")
        fn()
        return (_status_bytes("VmHWM:") - base) / 2**20
    except (OSError, KeyError):
        return None


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: the k of ``y ~ x^k``."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return math.nan
    mx = sum(a for a, _ in pairs) / len(pairs)
    my = sum(b for _, b in pairs) / len(pairs)
    var = sum((a - mx) ** 2 for a, _ in pairs)
    return sum((a - mx) * (b - my) for a, b in pairs) / var


def _layer_step(kind: str, pattern: Optional[P.Pattern], n: int, dim: int, heads: int) -> Callable[[], None]:
    torch.manual_seed(0)
    x = torch.randn(n, dim, requires_grad=True)
    if kind == "attention":
        layer = GraphMultiheadAttention(dim, heads)
        ptr = torch.tensor([0, n])
        # A model builds the edges once for all its layers: the cost of one layer excludes them.
        edge_index = pattern.edge_index(ptr) if layer.select_backend(pattern, n)[0] == "edges" else None
        fn = lambda: layer(x, edge_index, pattern=pattern, ptr=ptr)  # noqa: E731
    elif kind == "lstm":
        layer = nn.LSTM(dim, dim, batch_first=True)
        fn = lambda: layer(x.unsqueeze(0))[0]  # noqa: E731
    else:
        layer = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        fn = lambda: layer(x.t().unsqueeze(0))  # noqa: E731

    def step():
        fn().square().mean().backward()

    return step


# --------------------------------------------------------------------------- stats


def default_stats_patterns(w: int = 64) -> dict:
    return {
        "dense": P.dense(),
        f"window:{w}": P.window(w),
        f"causal&window:{w}": P.causal() & P.window(w),
        f"dilated:{w // 2}:2": P.dilated(w // 2, 2),
        f"block:{2 * w}": P.block(2 * w),
        f"bigbird:{w}:2:3:0": P.bigbird(w, 2, 3, seed=0),
    }


def _theory_key(name: str) -> str:
    base = name.split(":")[0]
    return {"causal&window": "causal_window"}.get(base, base)


def _pattern_stats(pattern: P.Pattern, n: int, num_layers: int, reach_max_len: int) -> dict:
    ptr = torch.tensor([0, n])
    # Patterns without a closed form or a hub get their reach by breadth-first search, O(n E):
    # 36 s for dilated at n = 16384. Past reach_max_len only the edge counts are computed.
    if n <= reach_max_len or pattern._path_closed_form(n, num_layers) is not None or pattern._has_hub(n):
        s = pattern.stats(ptr, num_layers=num_layers)
        return dict(edges=s["num_edges"], density=s["density"], keys_per_query=s["keys_per_query_mean"],
                    max_path_length=s["max_path_length"], receptive_field=s["receptive_field_mean"])
    edges = pattern.edge_index(ptr).size(1)
    return dict(edges=edges, density=edges / n**2, keys_per_query=edges / n, max_path_length=None, receptive_field=None)


def stats_table(
    patterns: dict,
    lengths: Sequence[int],
    num_layers: int = 2,
    dim: int = 128,
    heads: int = 4,
    repeats: int = 2,
    min_seconds: float = 0.25,
    dense_max_len: int = 8192,
    reach_max_len: int = 8192,
    reference_rows: bool = True,
    progress: bool = True,
) -> tuple[list, dict]:
    r"""Statistics and measured cost of one layer per pattern and length.

    Each (pattern, n) is one attention layer of width ``dim`` on one example of ``n`` positions,
    forward + backward, after a warm-up call: the peak memory of one call and the fastest of
    ``repeats`` timed calls, or more for calls shorter than ``min_seconds / repeats``. Returns ``(rows, exponents)``: one dict per (pattern, n) and,
    per pattern, the exponents :math:`k` of time and memory :math:`\sim n^k` fitted over ``n``.
    Dense is measured up to ``dense_max_len`` only; the reach columns (``max_path_length``,
    ``receptive_field``) of patterns that need a search are computed up to ``reach_max_len``.
    """
    jobs = [(name, p, n) for name, p in patterns.items() for n in lengths
            if not (isinstance(p, P.Band) and p.is_dense and n > dense_max_len)]
    if reference_rows:
        jobs += [(kind, None, n) for kind in ("lstm", "conv1d") for n in lengths]
    rows = []
    for name, pattern, n in tqdm(jobs, desc="stats", disable=not progress):
        row = {"pattern": name, "n": n}
        if pattern is not None:
            row.update(_pattern_stats(pattern, n, num_layers, reach_max_len))
        kind = "attention" if pattern is not None else name
        step = _layer_step(kind, pattern, n, dim, heads)
        step()  # warm-up: lazy initialisation and the gradient buffers are not what we measure
        row["peak_mib"] = peak_memory_mib(step)
        row["seconds"] = fastest_seconds(step, repeats, min_seconds)
        row["complexity"], row["sequential_ops"], row["path_theory"] = THEORY.get(_theory_key(name), ("", "", ""))
        rows.append(row)
    exponents = {}
    for name in dict.fromkeys(r["pattern"] for r in rows):
        mine = [r for r in rows if r["pattern"] == name]
        ns = [r["n"] for r in mine]
        exponents[name] = {
            "time": fit_exponent(ns, [r["seconds"] for r in mine]),
            "memory": fit_exponent(ns, [r["peak_mib"] for r in mine]),
            "lengths": [min(ns), max(ns)],
        }
    return rows, exponents


# --------------------------------------------------------------------------- training


class SequenceClassifier(nn.Module):
    r"""Encoder classifier for comparing patterns: embeddings + sinusoidal PE, ``num_layers``
    :class:`TransformerEncoderLayer` over ``pattern``, a linear head on the first position
    (``readout="cls"``, so the pattern's reach decides what the classifier can see) or on the
    mean of all positions (``readout="mean"``).

    With ``learned_span=S`` each layer learns per-head spans up to ``S`` (:class:`LearnedSpan`)
    on the window ``window(S + ramp)`` instead of following ``pattern``.

    Shapes: ``tokens [N]``, ``ptr [B + 1]`` -> logits ``[B, num_classes]``.
    """

    def __init__(self, vocab: int, num_classes: int, pattern: Optional[P.Pattern] = None, d_model: int = 64,
                 nhead: int = 4, num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1,
                 learned_span: Optional[int] = None, readout: str = "cls"):
        super().__init__()
        if readout not in ("cls", "mean"):
            raise ValueError(f"readout must be 'cls' or 'mean', got {readout!r}")
        self.readout = readout
        self.spans = None
        if learned_span is not None:
            self.spans = nn.ModuleList([LearnedSpan(nhead, learned_span) for _ in range(num_layers)])
            pattern = self.spans[0].pattern
        self.pattern = P.dense() if pattern is None else pattern
        self.d_model = d_model
        self.embed = nn.Embedding(vocab, d_model, padding_idx=0)
        self.layers = nn.ModuleList([
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, norm_first=True, pattern=self.pattern)
            for _ in range(num_layers)
        ])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: Tensor, ptr: Tensor) -> Tensor:
        x = self.embed(tokens) * math.sqrt(self.d_model)
        x = x + positional_encoding(local_positions(ptr), self.d_model, dtype=x.dtype, device=x.device)
        edge_index = distance = None
        if self.spans is not None:
            edge_index = self.pattern.edge_index(ptr)
            distance = relative_positions(edge_index, ptr).abs()  # [E], shared by the layers
        elif self.layers[0].self_attn.select_backend(self.pattern, int(ptr.diff().max()))[0] == "edges":
            edge_index = self.pattern.edge_index(ptr)  # built once for all layers, not once per layer
        for i, layer in enumerate(self.layers):
            bias = None if self.spans is None else self.spans[i](edge_index, ptr, distance)  # [E, H]
            x = layer(x, ptr, edge_index, attn_bias=bias)
        x = self.norm(x)
        pooled = x[ptr[:-1]] if self.readout == "cls" else global_mean_pool(x, ptr_to_batch(ptr))
        return self.head(pooled)


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
    nhead: int = 4  # attention heads
    num_layers: int = 2  # encoder layers: the reach of a local pattern is num_layers hops
    dim_feedforward: int = 128  # feed-forward width
    dropout: float = 0.0  # 0 lets SDPA take its fused CPU kernel; generated data does not overfit here
    span_penalty: float = 1e-3  # weight of the learned span's L1 cost (Adam makes even a small one felt)
    min_len: int = 32  # shortest expression
    max_len: int = 512  # longest expression
    num_train: int = 4000  # training expressions
    num_test: int = 500  # test expressions
    task: dict = field(default_factory=lambda: dict(LISTOPS_TASK))  # keyword arguments of listops.generate


def _batches(data: list, batch_size: int, generator: torch.Generator, bucket: int = 8):
    """Shuffled batches of expressions of similar length: each run of ``bucket * batch_size``
    shuffled examples is sorted by length before it is cut, so a padded dense batch wastes
    little (the sparse backends never pad)."""
    order = torch.randperm(len(data), generator=generator).tolist()
    batches = []
    for start in range(0, len(order) - batch_size + 1, bucket * batch_size):
        chunk = order[start:start + bucket * batch_size]
        chunk = chunk[:len(chunk) - len(chunk) % batch_size]
        chunk.sort(key=lambda i: data[i][0].numel())
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    for i in torch.randperm(len(batches), generator=generator).tolist():
        yield _collate([data[j] for j in batches[i]])


def _collate(items: list) -> tuple[Tensor, Tensor, Tensor]:
    tokens = torch.cat([t for t, _ in items])
    lengths = torch.tensor([t.numel() for t, _ in items])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return tokens, ptr, torch.tensor([y for _, y in items])


def default_train_patterns(max_len: int) -> dict:
    w = max(4, max_len // 64)
    return {
        "dense": P.dense(),
        f"window:{w}": P.window(w),
        f"dilated:{w}:4": P.dilated(w, 4),
        f"block:{4 * w}": P.block(4 * w),
        f"bigbird:{w}:2:{w // 2}:0": P.bigbird(w, 2, max(1, w // 2), seed=0),
        f"causal&window:{w}": P.causal() & P.window(w),
        f"span:{8 * w}": None,  # learned span up to 8w
    }


def train_one(name: str, pattern: Optional[P.Pattern], train: list, test: list, seed: int, settings: TrainSettings,
              progress: bool = True, stats_cache: Optional[dict] = None) -> dict:
    """Train the classifier under one pattern; test accuracy, speed and memory.

    ``test`` should be sorted by length (as :func:`train_table` does), so that evaluation pads little.
    """
    stats_cache = {} if stats_cache is None else stats_cache
    cfg = settings
    torch.manual_seed(seed)
    span = int(name.split(":")[1]) if name.startswith("span:") else None
    model = SequenceClassifier(len(listops.VOCAB), 10, pattern, d_model=cfg.d_model, nhead=cfg.nhead,
                               num_layers=cfg.num_layers, dim_feedforward=cfg.dim_feedforward,
                               dropout=cfg.dropout, learned_span=span)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps = cfg.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * max(0.0, 1 - s / steps))
    gen = torch.Generator().manual_seed(seed)
    tokens_seen, train_time, step = 0, 0.0, 0
    bar = tqdm(total=steps, desc=f"{name} seed {seed}", disable=not progress, leave=False)
    model.train()
    while step < steps:
        for tokens, ptr, labels in _batches(train, cfg.batch_size, gen):
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
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= steps:
                break
    bar.close()
    # Peak memory of one step on the longest training batch: the figure that decides what fits.
    longest = sorted(train, key=lambda item: item[0].numel())[-cfg.batch_size:]
    tokens, ptr, labels = _collate(longest)
    peak = peak_memory_mib(lambda: F.cross_entropy(model(tokens, ptr), labels).backward())
    model.eval()
    correct = 0
    with torch.no_grad():
        # Sorted by length, so that dense pads little here too.
        for i in range(0, len(test), 64):
            tokens, ptr, labels = _collate(test[i:i + 64])
            correct += int((model(tokens, ptr).argmax(-1) == labels).sum())
    key = repr(model.pattern)
    if key not in stats_cache:  # the pattern's statistics do not depend on the seed
        test_ptr = _collate(test)[1]
        s = model.pattern.stats(test_ptr, num_layers=len(model.layers))
        stats_cache[key] = {"edges_per_example": s["num_edges"] / (test_ptr.numel() - 1),
                            "max_path_length": s["max_path_length"]}
    out = {"pattern": name, "seed": seed, "accuracy": 100.0 * correct / len(test),
           "tokens_per_s": tokens_seen / train_time, "peak_mib": peak, **stats_cache[key]}
    if model.spans is not None:
        out["learned_spans"] = [[round(float(v), 1) for v in s.spans()] for s in model.spans]
    return out


def train_table(patterns: dict, seeds: Sequence[int], settings: Optional[TrainSettings] = None,
                progress: bool = True) -> list:
    """Every pattern trained with the same data, seeds and step budget; one row per (pattern, seed)."""
    cfg = settings or TrainSettings()
    train = listops.listops_dataset(cfg.num_train, cfg.min_len, cfg.max_len, seed=1000, **cfg.task)
    test = listops.listops_dataset(cfg.num_test, cfg.min_len, cfg.max_len, seed=2000, **cfg.task)
    test.sort(key=lambda item: item[0].numel())
    rows, cache = [], {}
    jobs = [(name, pattern, seed) for name, pattern in patterns.items() for seed in seeds]
    for name, pattern, seed in tqdm(jobs, desc="train", disable=not progress):  # steps of each run below it
        rows.append(train_one(name, pattern, train, test, seed, cfg, progress=progress, stats_cache=cache))
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


# --------------------------------------------------------------------------- output


def markdown(rows: list, columns: Sequence[str], headers: Optional[Sequence[str]] = None) -> str:
    """A markdown table of ``rows`` (dicts) with one column per key; ``None`` prints empty."""
    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return "inf" if math.isinf(v) else f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers or columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_outputs(rows: list, out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(rows, indent=1, default=str))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_scaling(rows: list, path: Path) -> None:
    """Time and peak memory of one layer against n, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["pattern"] for r in rows):
        mine = [r for r in rows if r["pattern"] == name]
        style = "--" if name in ("lstm", "conv1d") else "-"
        for ax, key in zip(axes, ("seconds", "peak_mib")):
            pts = [(r["n"], r[key]) for r in mine if r[key]]
            if pts:
                ax.loglog(*zip(*pts), style, marker="o", label=name)
    axes[0].set(xlabel="n (positions)", ylabel="forward + backward (s)", title="time of one layer")
    axes[1].set(xlabel="n (positions)", ylabel="peak memory (MiB)", title="memory of one layer")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lra(summary: list, path: Path, baseline: Optional[float] = None) -> None:
    """Accuracy against speed relative to dense; the area of a mark is the peak memory (LRA style).
    ``baseline`` (e.g. the majority class's accuracy) is drawn as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    biggest = max((r["peak_mib"] or 1) for r in summary)
    for r in summary:
        size = 60 + 1500 * (r["peak_mib"] or 1) / biggest
        ax.scatter(r["relative_speed"], r["accuracy"], s=size, alpha=0.5)
        ax.errorbar(r["relative_speed"], r["accuracy"], yerr=r["accuracy_std"], fmt="none", ecolor="gray")
        ax.annotate(r["pattern"], (r["relative_speed"], r["accuracy"]), fontsize=8, ha="center", va="bottom")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="majority class")
        ax.legend(fontsize=8, loc="upper right")
    ax.set(xlabel="tokens/s relative to dense", ylabel="test accuracy (%)",
           title="ListOps: accuracy vs speed (mark area = peak memory)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


TRAIN_COLUMNS = ["pattern", "accuracy_text", "seeds", "relative_speed", "tokens_per_s", "peak_mib",
                 "edges_per_example", "max_path_length", "learned_span_text"]
TRAIN_HEADERS = ["pattern", "accuracy % (mean ± std)", "seeds", "tokens/s vs dense", "tokens/s", "peak MiB",
                 "edges per example", "max path length", "learned span per layer: mean (range)"]
STATS_COLUMNS = ["pattern", "n", "edges", "density", "keys_per_query", "max_path_length", "receptive_field",
                 "seconds", "peak_mib", "complexity", "sequential_ops", "path_theory"]


def add_arguments(parser) -> None:
    """The options of ``graphattn compare``."""
    parser.add_argument("--stats", action="store_true", help="pattern statistics and the measured cost of one layer")
    parser.add_argument("--train", action="store_true", help="train the same classifier under each pattern on ListOps")
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run in under 2 minutes")
    parser.add_argument("--patterns", help="comma-separated pattern specs (e.g. dense,window:16,span:64)")
    parser.add_argument("--lengths", help="comma-separated lengths n for --stats")
    parser.add_argument("--max-len", type=int,
                        help="longest ListOps expression for --train (default 512; 128 with --quick)")
    parser.add_argument("--task", choices=["sparse", "lra"], default="sparse",
                        help="sparse: flat MAX/MIN whose value rests on ~3 digits anywhere (default); "
                             "lra: the Long Range Arena's nested distribution (needs far more steps)")
    parser.add_argument("--steps", type=int, help="training steps per pattern and seed (default 200)")
    parser.add_argument("--seeds", type=int, help="seeds per pattern (default 2; 1 with --quick)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default="runs/compare", help="directory for tables and plots")
    parser.add_argument("--no-progress", action="store_true")


def _parse_patterns(text: str) -> dict:
    out = {}
    for spec in text.split(","):
        spec = spec.strip()
        if spec.startswith("span:"):
            size = spec.split(":", 1)[1]
            if not size.isdigit() or int(size) < 1:
                raise ValueError(f"span takes a positive integer maximum span, got {spec!r}")
            out[spec] = None
        else:
            out[spec] = P.parse(spec)
    return out


def train_settings(args) -> TrainSettings:
    """The :class:`TrainSettings` of ``graphattn compare --train`` for its options."""
    max_len = args.max_len or (128 if args.quick else 512)
    return TrainSettings(steps=args.steps or 200, max_len=max_len, min_len=min(32, max_len),
                         num_train=2000 if args.quick else 4000, num_test=300 if args.quick else 500,
                         task=dict(LISTOPS_TASK if args.task == "sparse" else LRA_TASK))


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks of any size instead of unmapping those above 32 MiB.

    glibc serves an allocation above its mmap threshold (at most 32 MiB by default) with fresh
    pages from the kernel and returns them on free, so every such tensor pays a page fault per
    4 KiB page at each allocation. An ``[E, heads]`` tensor crosses 32 MiB near E = 2M edges
    (n = 16384 for BigBird with 4 heads), where the edges backend's time per edge then rose by
    ~1.7x: a cost of the allocator, not of the algorithm, and one that jemalloc or tcmalloc do
    not have. The benchmark raises the thresholds (``mallopt``), for every row alike; users can
    do the same with ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824``. Returns whether
    it could (only on glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def run(args) -> int:
    """``graphattn compare``: print markdown tables, write them with CSV, JSON and PNGs under ``--out``."""
    if not (args.stats or args.train):
        args.stats = args.train = True
    for name in ("steps", "seeds", "max_len", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    if args.stats:
        keep_freed_memory()
        lengths = [int(v) for v in args.lengths.split(",")] if args.lengths else \
            ([256, 512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192, 16384])
        patterns = _parse_patterns(args.patterns) if args.patterns else default_stats_patterns(16 if args.quick else 64)
        patterns = {k: v for k, v in patterns.items() if v is not None}
        rows, exponents = stats_table(patterns, lengths, progress=progress)
        write_outputs(rows, out_dir, "stats")
        (out_dir / "exponents.json").write_text(json.dumps(exponents, indent=1))
        plot_scaling(rows, out_dir / "scaling.png")
        lines = [f"| {name} | {e['time']:.2f} | {e['memory']:.2f} | {e['lengths'][0]}-{e['lengths'][1]} |"
                 for name, e in exponents.items()]
        table = (markdown(rows, STATS_COLUMNS) + "\n\nExponents k of time and memory ~ n^k, fitted over n:\n\n"
                 + "| pattern | time | memory | n |\n|---|---|---|---|\n" + "\n".join(lines))
        (out_dir / "stats.md").write_text(table + "\n")
        print(table)
    if args.train:
        cfg = train_settings(args)
        patterns = _parse_patterns(args.patterns) if args.patterns else default_train_patterns(cfg.max_len)
        seeds = list(range(args.seeds or (1 if args.quick else 2)))
        rows = train_table(patterns, seeds, cfg, progress=progress)
        summary = summarise(rows)
        write_outputs(rows, out_dir, "train_runs")
        write_outputs(summary, out_dir, "train")
        test = listops.listops_dataset(cfg.num_test, cfg.min_len, cfg.max_len, seed=2000, **cfg.task)
        majority = 100.0 * max(Counter(y for _, y in test).values()) / len(test)
        plot_lra(summary, out_dir / "lra.png", baseline=majority)
        settings = {**asdict(cfg), "seeds": seeds, "majority_class_accuracy": majority}
        (out_dir / "train_settings.json").write_text(json.dumps(settings, indent=1))
        table = (markdown(summary, TRAIN_COLUMNS, TRAIN_HEADERS)
                 + f"\n\nListOps ({args.task}), lengths {cfg.min_len}-{cfg.max_len}, {cfg.steps} steps of "
                 f"{cfg.batch_size}, seeds {seeds}, {cfg.num_layers} layers of width {cfg.d_model}; "
                 f"majority class {majority:.1f}%.")
        (out_dir / "train.md").write_text(table + "\n")
        print(table)
    print(f"\nwrote tables and plots under {out_dir}/")
    return 0
