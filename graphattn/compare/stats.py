r"""Patterns side by side: statistics and the measured cost of one attention layer per length.

For each pattern and length, the pattern's statistics (edges, density, keys per query, maximum
path length, receptive field) beside the measured forward + backward time and peak memory of
one attention layer, the scaling exponents fitted over ``n``, and the theoretical columns of
Table 1 of "Attention Is All You Need". An LSTM and a Conv1d of the same width are reference rows.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from graphattn import patterns as P
from graphattn.nn import GraphMultiheadAttention
from graphattn.utils.bench import fastest_seconds, fit_exponent, peak_memory_mib

__all__ = ["THEORY", "STATS_COLUMNS", "layer_step", "default_stats_patterns", "theory_key", "pattern_stats",
           "stats_table"]

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
STATS_COLUMNS = ["pattern", "n", "edges", "density", "keys_per_query", "max_path_length", "receptive_field",
                 "seconds", "peak_mib", "complexity", "sequential_ops", "path_theory"]


def layer_step(kind: str, pattern: Optional[P.Pattern], n: int, dim: int, heads: int) -> Callable[[], None]:
    """One forward + backward of an attention layer (or an LSTM / Conv1d of the same width) on ``n`` positions."""
    # Inputs and weights are drawn from a fixed seed in a forked generator: the caller's stream is untouched.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.randn(n, dim, requires_grad=True)
        if kind == "attention":
            layer = GraphMultiheadAttention(dim, heads)
            ptr = torch.tensor([0, n])
            # A model builds the edges once for all its layers: the cost of one layer excludes them.
            if layer.select_backend(pattern, n)[0] == "edges":
                edge_index = pattern.edge_index(ptr)
                fn = lambda: layer(x, edge_index)  # noqa: E731
            else:
                fn = lambda: layer(x, pattern=pattern, ptr=ptr)  # noqa: E731
        elif kind == "lstm":
            layer = nn.LSTM(dim, dim, batch_first=True)
            fn = lambda: layer(x.unsqueeze(0))[0]  # noqa: E731
        else:
            layer = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
            fn = lambda: layer(x.t().unsqueeze(0))  # noqa: E731

    def step():
        fn().square().mean().backward()

    return step


def default_stats_patterns(w: int = 64) -> dict:
    """The patterns of the scaling table, by their grammar names."""
    return {
        "dense": P.dense(),
        f"window:{w}": P.window(w),
        f"causal&window:{w}": P.causal() & P.window(w),
        f"dilated:{w // 2}:2": P.dilated(w // 2, 2),
        f"block:{2 * w}": P.block(2 * w),
        f"bigbird:{w}:2:3:0": P.bigbird(w, 2, 3, seed=0),
    }


def theory_key(name: str) -> str:
    """The row of Table 1 that a pattern name belongs to."""
    base = name.split(":")[0]
    return {"causal&window": "causal_window"}.get(base, base)


def pattern_stats(pattern: P.Pattern, n: int, num_layers: int, reach_max_len: int) -> dict:
    """Edges, density, keys per query and reach of ``pattern`` on one example of ``n`` positions."""
    ptr = torch.tensor([0, n])
    # Patterns without a closed form or a hub get their reach by breadth-first search, O(n E):
    # 36 s for dilated at n = 16384. Past reach_max_len only the edge counts are computed.
    if n <= reach_max_len or pattern.closed_form_reach(n, num_layers) is not None or pattern.has_hub(n):
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
            if not (p.is_dense and n > dense_max_len)]
    if reference_rows:
        jobs += [(kind, None, n) for kind in ("lstm", "conv1d") for n in lengths]
    rows = []
    for name, pattern, n in tqdm(jobs, desc="stats", disable=not progress):
        row = {"pattern": name, "n": n}
        if pattern is not None:
            row.update(pattern_stats(pattern, n, num_layers, reach_max_len))
        kind = "attention" if pattern is not None else name
        step = layer_step(kind, pattern, n, dim, heads)
        step()  # warm-up: lazy initialisation and the gradient buffers are not what we measure
        row["peak_mib"] = peak_memory_mib(step)
        row["seconds"] = fastest_seconds(step, repeats, min_seconds)
        row["complexity"], row["sequential_ops"], row["path_theory"] = THEORY.get(theory_key(name), ("", "", ""))
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
