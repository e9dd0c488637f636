r"""Patterns where each query attends one contiguous run of keys: bands and blocks.

A band ``Band(left, right)`` lets local query ``t`` attend the local keys
``t - left <= s <= t + right`` of its example: ``dense()``, ``causal()`` and ``window(w)`` are
bands, and bands are closed under ``&`` and ``|``, which lets the attention layer pick its
fast backends (SDPA for dense and causal, the blocked window kernel for finite bands).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from graphattn.patterns.base import Pattern, combined_repr
from graphattn.patterns.tiles import run_blocks
from graphattn.utils.batch import Layout
from graphattn.utils.checks import check_int
from graphattn.utils.edges import expand_ranges

__all__ = ["RangePattern", "Band", "dense", "causal", "window", "block"]


class RangePattern(Pattern):
    """A pattern where every query attends one contiguous run of keys ``[lo, hi)``.

    Subclasses implement :meth:`key_ranges`; edges and membership follow from it.
    """

    contiguous = True

    def key_ranges(self, query: Layout, key: Layout) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """Global key bounds ``(lo [N_q], hi [N_q])`` of each query: it attends ``lo <= j < hi``."""
        raise NotImplementedError

    def build_edges(self, query, key):
        lo, hi = self.key_ranges(query, key)
        return expand_ranges(lo, hi)

    def allows(self, src, dst, query, key):
        lo, hi = self.key_ranges(query, key)
        return (src >= lo[dst]) & (src < hi[dst])

    def mask_rule(self, query, key):
        lo, hi = self.key_ranges(query, key)
        return lambda i, j: (j >= lo[i]) & (j < hi[i])

    def block_sparsity(self, query, key, block_q, block_k):
        lo, hi = self.key_ranges(query, key)  # a closed form: the runs, without their edges
        return run_blocks(lo, hi, key.num_nodes, block_q, block_k)

    def simplify_intersection(self, other):
        if isinstance(other, RangePattern):
            return RangeIntersection(self, other)
        return None


class RangeIntersection(RangePattern):
    """``a & b`` of two range patterns: the intersection of their runs."""

    def __init__(self, a: RangePattern, b: RangePattern):
        self.a, self.b = a, b
        self.bipartite = a.bipartite or b.bipartite

    def key_ranges(self, query, key):
        lo_a, hi_a = self.a.key_ranges(query, key)
        lo_b, hi_b = self.b.key_ranges(query, key)
        return torch.maximum(lo_a, lo_b), torch.minimum(hi_a, hi_b)

    def __repr__(self):
        return combined_repr(self.a, "&", self.b)


class Band(RangePattern):
    """Query ``t`` attends keys ``s`` with ``t - left <= s <= t + right`` (local positions).

    ``left=None`` / ``right=None`` mean unbounded. ``dense() == Band(None, None)``,
    ``causal() == Band(None, 0)``, ``window(w) == Band(w, w)``; bands are closed under ``&``
    and ``|`` (both contain the diagonal), which lets the attention layer pick a fast backend.
    """

    def __init__(self, left: Optional[int] = None, right: Optional[int] = None):
        self.left = None if left is None else check_int("left", left, 0)
        self.right = None if right is None else check_int("right", right, 0)

    def as_band(self) -> "Band":
        return self

    @property
    def is_causal(self) -> bool:
        return self.left is None and self.right == 0

    def clipped(self, max_len: int) -> "Band":
        """The band as it acts on examples of at most ``max_len`` positions: a side at least
        ``max_len - 1`` wide is unbounded there (a wide window is dense on short examples)."""
        def clip(side):
            return None if side is None or side >= max_len - 1 else side

        return Band(clip(self.left), clip(self.right))

    def key_ranges(self, query, key):
        n_key = key.sizes[query.batch]
        lo = torch.zeros_like(query.pos) if self.left is None else (query.pos - self.left).clamp(min=0)
        lo = torch.minimum(lo, n_key)
        hi = n_key if self.right is None else torch.minimum(query.pos + self.right + 1, n_key)
        base = key.ptr[query.batch]
        return base + lo, base + hi

    def mask_rule(self, query, key):
        if key is not query:  # cross-attention: local positions differ, the runs of keys say it
            return super().mask_rule(query, key)
        # Self-attention: j - i is the local offset within an example, so a band needs no table
        # (as a hand-written FlexAttention mask would not), and one example no example check.
        left, right, batch = self.left, self.right, query.batch
        one_example = query.sizes.numel() == 1

        def rule(i, j):
            offset, ok = j - i, j >= 0  # every pair, before the limits below
            if left is not None:
                ok = ok & (offset >= -left)
            if right is not None:
                ok = ok & (offset <= right)
            return ok if one_example else ok & (batch[i] == batch[j])

        return rule

    def closed_form_reach(self, n, num_layers):
        # Information moves forward by up to `left` and backward by up to `right` positions
        # a layer (query t reads keys t - left .. t + right).
        fwd = n - 1 if self.left is None else min(self.left, n - 1)
        bwd = n - 1 if self.right is None else min(self.right, n - 1)
        if n <= 1:
            path = 0
        elif fwd == 0 or bwd == 0:
            path = math.inf
        else:
            path = max(math.ceil((n - 1) / fwd), math.ceil((n - 1) / bwd))
        t = torch.arange(n)
        lo = (t - fwd * num_layers).clamp(min=0)
        hi = (t + bwd * num_layers).clamp(max=n - 1)
        return path, hi - lo + 1

    def simplify_union(self, other):
        if not isinstance(other, Band):
            return None
        # Both intervals contain the query itself, so their union is an interval too.
        def wider(x, y):
            return None if x is None or y is None else max(x, y)

        return Band(wider(self.left, other.left), wider(self.right, other.right))

    def simplify_intersection(self, other):
        if not isinstance(other, Band):
            return super().simplify_intersection(other)

        def narrower(x, y):
            return y if x is None else x if y is None else min(x, y)

        return Band(narrower(self.left, other.left), narrower(self.right, other.right))

    def __repr__(self):
        left, right = self.left, self.right
        if left is None:
            return {None: "dense", 0: "causal"}.get(right, f"causal|window:{right}")
        if right is None:
            return f"band:{left}:inf"  # a key-side causal band: rare, no shorter name
        if left == right:
            return f"window:{left}"
        if right == 0:
            return f"causal&window:{left}"
        return f"band:{left}:{right}"


def dense() -> Band:
    """Every query attends every key of its example (the complete graph, self included)."""
    return Band(None, None)


def causal() -> Band:
    """Query ``t`` attends keys ``s <= t`` (a DAG on the sequence)."""
    return Band(None, 0)


def window(w: int) -> Band:
    """Query ``t`` attends keys ``s`` with ``|t - s| <= w``: the w-th power of the path graph
    (``window(0)``: each position attends itself only, the self pairs)."""
    return Band(check_int("w", w, 0), w)


class Block(RangePattern):
    """Block-diagonal attention; see :func:`block`."""

    def __init__(self, size: int):
        self.size = check_int("size", size, 1)

    def key_ranges(self, query, key):
        n_key = key.sizes[query.batch]
        lo = torch.minimum(query.pos // self.size * self.size, n_key)
        hi = torch.minimum(lo + self.size, n_key)
        base = key.ptr[query.batch]
        return base + lo, base + hi

    def __repr__(self):
        return f"block:{self.size}"


def block(size: int) -> Pattern:
    """Block-diagonal attention: positions are cut into blocks of ``size``; each attends its block."""
    return Block(size)
