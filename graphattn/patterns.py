r"""Attention patterns: which keys each query may attend, as the edges of a graph.

A batch of examples is laid out by ``ptr`` (LongTensor ``[B + 1]``, PyG's CSR offsets):
example ``b`` owns the nodes ``ptr[b]:ptr[b + 1]``. A pattern turns ``ptr`` into
``edge_index: [2, E]`` in PyG's convention, row 0 = key / source ``j``, row 1 = query / target
``i``, sorted by target then source, without duplicates and never crossing examples.

Positions are local to their example: ``window(w)`` lets local query ``t`` attend local keys
``s`` with ``|t - s| <= w``. Every position-based pattern also serves cross-attention: with a
second layout ``key_ptr`` the keys come from another batch of the same number of examples.

Patterns combine: ``causal() & window(8)`` is a causal band, ``window(3) | global_tokens([0])``
a Longformer pattern. Edges are built vectorised in torch, in time and memory proportional to
the number of edges, never to ``n ** 2`` unless the pattern is that dense.

Example::

    >>> import torch
    >>> from graphattn import patterns
    >>> ptr = torch.tensor([0, 3, 5])          # two examples of lengths 3 and 2
    >>> patterns.window(1).edge_index(ptr)
    tensor([[0, 1, 0, 1, 2, 1, 2, 3, 4, 3, 4],
            [0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]])
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
from torch import Tensor

__all__ = [
    "Pattern",
    "Band",
    "dense",
    "causal",
    "window",
    "dilated",
    "block",
    "global_tokens",
    "random",
    "bigbird",
    "graph",
    "khop",
    "cross",
    "check_ptr",
    "parse",
]

PtrLike = Union[Tensor, Sequence[int]]


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_ptr(ptr: PtrLike, name: str = "ptr") -> Tensor:
    """Validate CSR offsets and return them as a LongTensor ``[B + 1]``.

    ``ptr`` must be 1-D, start at 0 and be non-decreasing (empty examples are allowed).
    """
    if not isinstance(ptr, Tensor):
        if isinstance(ptr, (list, tuple)) and all(
            isinstance(v, Integral) and not isinstance(v, bool) for v in ptr
        ):
            ptr = torch.tensor(list(ptr), dtype=torch.long)
        else:
            raise TypeError(f"{name} must be a LongTensor [B + 1] of offsets, got {type(ptr).__name__}")
    if ptr.dtype.is_floating_point or ptr.dtype.is_complex or ptr.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got dtype {ptr.dtype}")
    if ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError(f"{name} must be 1-D of shape [B + 1] with B >= 0, got shape {tuple(ptr.shape)}")
    ptr = ptr.long()
    if int(ptr[0]) != 0:
        raise ValueError(f"{name} must start at 0, got {int(ptr[0])}")
    if ptr.numel() > 1 and bool((ptr[1:] < ptr[:-1]).any()):
        raise ValueError(f"{name} must be non-decreasing, got {ptr.tolist()[:20]}")
    return ptr


def _check_edge_index(edge_index, name: str = "edge_index") -> Tensor:
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a LongTensor [2, E], got {type(edge_index).__name__}")
    if edge_index.dtype != torch.long:
        raise TypeError(f"{name} must have dtype torch.long, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.numel() and int(edge_index.min()) < 0:
        raise ValueError(f"{name} has negative node indices")
    return edge_index


class _Layout(NamedTuple):
    """A batch layout with per-node derived quantities (computed once per call)."""

    ptr: Tensor  # [B + 1]
    sizes: Tensor  # [B]
    batch: Tensor  # [N] example of each node
    pos: Tensor  # [N] local position of each node

    @property
    def num_nodes(self) -> int:
        return int(self.ptr[-1])

    @staticmethod
    def of(ptr: Tensor) -> "_Layout":
        sizes = ptr.diff()
        num_nodes = int(ptr[-1])
        batch = torch.repeat_interleave(
            torch.arange(sizes.numel(), device=ptr.device), sizes, output_size=num_nodes
        )
        pos = torch.arange(num_nodes, device=ptr.device) - ptr[batch]
        return _Layout(ptr, sizes, batch, pos)


def _layouts(ptr: PtrLike, key_ptr: Optional[PtrLike]) -> tuple[_Layout, _Layout]:
    ptr = check_ptr(ptr, "ptr")
    q = _Layout.of(ptr)
    if key_ptr is None:
        return q, q
    key_ptr = check_ptr(key_ptr, "key_ptr").to(ptr.device)
    if key_ptr.numel() != ptr.numel():
        raise ValueError(
            f"key_ptr must describe as many examples as ptr ({ptr.numel() - 1}), "
            f"got {key_ptr.numel() - 1}"
        )
    return q, _Layout.of(key_ptr)


# --------------------------------------------------------------------------- edge helpers


def _expand_ranges(lo: Tensor, hi: Tensor) -> Tensor:
    """Edges ``lo[i] <= j < hi[i]`` for every query ``i``, sorted by (i, j): ``[2, E]``.

    Written to keep peak memory near the size of the output (about 24 bytes an edge).
    """
    counts = (hi - lo).clamp_(min=0)
    num_edges = int(counts.sum())
    out = torch.empty(2, num_edges, dtype=torch.long, device=lo.device)
    if num_edges == 0:
        return out
    out[1] = torch.repeat_interleave(
        torch.arange(lo.numel(), device=lo.device), counts, output_size=num_edges
    )
    # j = lo[i] + (e - first edge of i)
    shift = lo - (torch.cumsum(counts, 0) - counts)
    torch.arange(num_edges, out=out[0])
    out[0] += shift[out[1]]
    return out


def _candidates_to_edges(keys: Tensor, valid: Tensor) -> Tensor:
    """Edges from a ``[Nq, K]`` table of candidate keys per query (each row sorted, unique)."""
    dst = torch.arange(keys.size(0), device=keys.device).unsqueeze(1).expand_as(keys)
    return torch.stack([keys[valid], dst[valid]])


def _edge_keys(edge_index: Tensor, num_keys: int) -> Tensor:
    return edge_index[1] * max(num_keys, 1) + edge_index[0]


def _sorted_isin(keys: Tensor, sorted_ref: Tensor) -> Tensor:
    if sorted_ref.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    idx = torch.searchsorted(sorted_ref, keys).clamp_(max=sorted_ref.numel() - 1)
    return sorted_ref[idx] == keys


def _merge_edges(a: Tensor, b: Tensor, num_keys: int) -> Tensor:
    """Union of two sorted, duplicate-free edge lists, by merging instead of sorting."""
    if a.size(1) < b.size(1):
        a, b = b, a
    if b.size(1) == 0:
        return a
    key_a = _edge_keys(a, num_keys)
    key_b = _edge_keys(b, num_keys)
    keep = ~_sorted_isin(key_b, key_a)
    b, key_b = b[:, keep], key_b[keep]
    # b's k-th edge lands after the k edges of b and the edges of a that are smaller.
    pos_b = torch.searchsorted(key_a, key_b) + torch.arange(key_b.numel(), device=a.device)
    del key_a, key_b
    out = torch.empty(2, a.size(1) + b.size(1), dtype=torch.long, device=a.device)
    from_a = torch.ones(out.size(1), dtype=torch.bool, device=a.device)
    from_a[pos_b] = False
    out[:, pos_b] = b
    out[:, from_a] = a
    return out


def _hash(*values: Tensor) -> Tensor:
    """A counter-based integer hash (splitmix64 finaliser on int64, wrapping).

    Random patterns use it instead of a sequential generator so that an example gets the same
    random keys whatever batch it sits in: the keys depend only on (seed, length, position).
    """
    h = torch.zeros_like(values[0])
    for v in values:
        h = (h ^ v) * -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
        h = h ^ ((h >> 31) & ((1 << 33) - 1))
        h = h * -4658895280553007687  # 0xBF58476D1CE4E5B9
        h = h ^ ((h >> 29) & ((1 << 35) - 1))
    return h & ((1 << 62) - 1)  # non-negative


# --------------------------------------------------------------------------- base class


class Pattern:
    """Base class: a rule that says which keys each query may attend.

    Subclasses implement ``_edges(q, k)`` (sorted, unique ``[2, E]`` of global indices) and
    ``_contains(src, dst, q, k)`` (membership of given pairs), where ``q`` and ``k`` are the
    query and key layouts (the same object for self-attention).
    """

    #: the pattern depends only on example lengths and local positions (not on a graph)
    position_based: bool = True
    #: the pattern needs a separate key layout (``key_ptr``)
    bipartite: bool = False

    # -- public API ---------------------------------------------------------------------

    def edge_index(self, ptr: PtrLike, key_ptr: Optional[PtrLike] = None) -> Tensor:
        """Edges of the pattern on the batch ``ptr``.

        Args:
            ptr (LongTensor): offsets of the query batch, ``[B + 1]``.
            key_ptr (LongTensor, optional): offsets of the key batch ``[B + 1]`` for
                cross-attention (default: the query batch).

        Returns:
            LongTensor ``[2, E]``: row 0 key ``j``, row 1 query ``i``; sorted by ``i`` then ``j``.
        """
        q, k = self._resolve(ptr, key_ptr)
        return self._edges(q, k)

    def to_dense(self, ptr: PtrLike, key_ptr: Optional[PtrLike] = None) -> Tensor:
        """Boolean mask ``[N_query, N_key]``, True where query ``i`` may attend key ``j``.

        Polarity: True = may attend (as SDPA's boolean ``attn_mask``; the opposite of
        ``nn.MultiheadAttention``'s masks).
        """
        q, k = self._resolve(ptr, key_ptr)
        edge_index = self._edges(q, k)
        mask = torch.zeros(q.num_nodes, k.num_nodes, dtype=torch.bool, device=q.ptr.device)
        mask[edge_index[1], edge_index[0]] = True
        return mask

    def contains(self, edge_index: Tensor, ptr: PtrLike, key_ptr: Optional[PtrLike] = None) -> Tensor:
        """Whether each pair ``(edge_index[0], edge_index[1])`` is an edge of the pattern: bool ``[E]``."""
        q, k = self._resolve(ptr, key_ptr)
        edge_index = _check_edge_index(edge_index)
        self._check_bounds(edge_index, q, k)
        return self._contains(edge_index[0], edge_index[1], q, k)

    def stats(self, ptr: PtrLike, num_layers: int = 1, key_ptr: Optional[PtrLike] = None) -> dict:
        """Statistics of the pattern on a batch.

        Returns a dict with ``num_nodes``, ``num_edges``, ``density`` (edges over the edges of
        the dense pattern), ``keys_per_query_min/mean/max``, ``max_path_length`` (the fewest
        layers after which every position of every example can have received information from
        every other position of its example; ``inf`` when some never can; ``None`` for
        cross-attention) and ``receptive_field_min/mean/max`` (positions, self included, whose
        information can reach a query after ``num_layers`` layers).
        """
        num_layers = _check_int("num_layers", num_layers, 1)
        q, k = self._resolve(ptr, key_ptr)
        edge_index = self._edges(q, k)
        num_edges = edge_index.size(1)
        keys_per_query = torch.bincount(edge_index[1], minlength=q.num_nodes)
        all_pairs = int((q.sizes * k.sizes).sum())
        out = {
            "num_examples": q.sizes.numel(),
            "num_nodes": q.num_nodes,
            "num_edges": num_edges,
            "density": num_edges / all_pairs if all_pairs else 0.0,
            "keys_per_query_min": int(keys_per_query.min()) if q.num_nodes else 0,
            "keys_per_query_mean": float(keys_per_query.double().mean()) if q.num_nodes else 0.0,
            "keys_per_query_max": int(keys_per_query.max()) if q.num_nodes else 0,
            "num_layers": num_layers,
        }
        if k is not q:
            rf = keys_per_query.float()
            out["max_path_length"] = None
        else:
            path, rf = self._reach(edge_index, q, num_layers)
            out["max_path_length"] = path
        out["receptive_field_min"] = int(rf.min()) if rf.numel() else 0
        out["receptive_field_mean"] = float(rf.double().mean()) if rf.numel() else 0.0
        out["receptive_field_max"] = int(rf.max()) if rf.numel() else 0
        return out

    def __or__(self, other: "Pattern") -> "Pattern":
        _check_pattern(other, "right operand of |")
        return _union(self, other)

    def __and__(self, other: "Pattern") -> "Pattern":
        _check_pattern(other, "right operand of &")
        return _intersection(self, other)

    # -- internals ----------------------------------------------------------------------

    def _resolve(self, ptr, key_ptr) -> tuple[_Layout, _Layout]:
        if self.bipartite and key_ptr is None:
            raise ValueError(f"{self!r} is a cross-attention pattern: key_ptr is required")
        if not self.position_based and key_ptr is not None:
            raise ValueError(f"{self!r} is defined on one graph: key_ptr must be None")
        return _layouts(ptr, key_ptr)

    @staticmethod
    def _check_bounds(edge_index: Tensor, q: _Layout, k: _Layout) -> None:
        if edge_index.numel() and (
            int(edge_index[0].max()) >= k.num_nodes or int(edge_index[1].max()) >= q.num_nodes
        ):
            raise ValueError(
                f"edge_index points outside the batch: keys must be < {k.num_nodes} "
                f"and queries < {q.num_nodes}"
            )

    def _edges(self, q: _Layout, k: _Layout) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _contains(self, src: Tensor, dst: Tensor, q: _Layout, k: _Layout) -> Tensor:
        # Generic fallback: membership in the sorted edge list.
        ref = _edge_keys(self._edges(q, k), k.num_nodes)
        return _sorted_isin(dst * max(k.num_nodes, 1) + src, ref)

    def _path_closed_form(self, n: int, num_layers: int):
        """(max path length, receptive field [n]) of one example of length n, if known."""
        return None

    def _has_hub(self, n: int) -> bool:
        """Whether an example of length n has a position that reads and is read by all."""
        return False

    def _reach(self, edge_index: Tensor, q: _Layout, num_layers: int):
        """Max path length over examples and receptive field per query after num_layers."""
        rf = torch.zeros(q.num_nodes, dtype=torch.long)
        worst: float = 0
        sizes = q.sizes.tolist()
        starts = q.ptr.tolist()
        # Position-based patterns look the same on every example of one length.
        cache: dict[int, tuple] = {}
        # Edges are sorted by target, so each example's edges are one contiguous slice.
        edge_ptr = torch.searchsorted(edge_index[1].cpu(), q.ptr.cpu()).tolist()
        for b, n in enumerate(sizes):
            if n == 0:
                continue
            if self.position_based and n in cache:
                path, rf_b = cache[n]
            else:
                closed = self._path_closed_form(n, num_layers)
                if closed is not None:
                    path, rf_b = closed
                else:
                    local = edge_index[:, edge_ptr[b] : edge_ptr[b + 1]].cpu() - starts[b]
                    reach = _hub_reach if self._has_hub(n) else bfs_reach
                    path, rf_b = reach(local, n, num_layers)
                cache[n] = (path, rf_b)
            worst = max(worst, path)
            rf[starts[b] : starts[b] + n] = rf_b
        return worst, rf

    def __repr__(self) -> str:  # pragma: no cover - overridden
        return f"{type(self).__name__}()"


def _check_pattern(p, name: str) -> None:
    if not isinstance(p, Pattern):
        raise TypeError(f"{name} must be a graphattn Pattern, got {type(p).__name__}")


def _hub_reach(edge_index: Tensor, n: int, num_layers: int):
    # A hub reads everything in layer 1 and everyone reads it in layer 2, so every distance is
    # 0 (self), 1 (an edge) or 2: no search needed, which keeps BigBird stats linear in E.
    if n <= 1:
        return 0, torch.ones(n, dtype=torch.long)
    src, dst = edge_index
    loops = torch.bincount(dst[src == dst], minlength=n)
    one_hop = torch.bincount(dst, minlength=n) + 1 - loops
    path = 1 if bool((one_hop == n).all()) else 2
    return path, one_hop if num_layers == 1 else torch.full((n,), n, dtype=torch.long)


def bfs_reach(edge_index: Tensor, num_nodes: int, num_layers: int = 1, chunk: int = 1024):
    """Exact reach statistics of one example by breadth-first search (scipy).

    Args:
        edge_index (LongTensor): local edges ``[2, E]`` (row 0 key, row 1 query).
        num_nodes (int): number of positions ``n``.
        num_layers (int): layers for the receptive field.

    Returns:
        ``(max_path_length, receptive_field)``: the largest number of hops information needs
        from any position to any other (``inf`` if some pair is unreachable) and, per query,
        the number of positions reachable within ``num_layers`` hops (self included), ``[n]``.
    """
    if num_nodes <= 1:
        return 0, torch.ones(num_nodes, dtype=torch.long)
    ei = edge_index.numpy()
    # csgraph[s, t] = 1: information flows from key s to query t.
    graph = scipy.sparse.csr_matrix(
        (np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])), shape=(num_nodes, num_nodes)
    )
    worst = 0.0
    rf = np.zeros(num_nodes, dtype=np.int64)
    for start in range(0, num_nodes, chunk):
        sources = np.arange(start, min(start + chunk, num_nodes))
        dist = scipy.sparse.csgraph.shortest_path(
            graph, directed=True, unweighted=True, indices=sources
        )  # [sources, targets]
        worst = max(worst, float(dist.max()))
        rf += (dist <= num_layers).sum(0)
    path = math.inf if math.isinf(worst) else int(worst)
    return path, torch.from_numpy(rf)


# --------------------------------------------------------------------------- range patterns


class _RangePattern(Pattern):
    """A pattern where every query attends one contiguous run of keys ``[lo, hi)``."""

    def _ranges(self, q: _Layout, k: _Layout) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _edges(self, q, k):
        lo, hi = self._ranges(q, k)
        return _expand_ranges(lo, hi)

    def _contains(self, src, dst, q, k):
        lo, hi = self._ranges(q, k)
        return (src >= lo[dst]) & (src < hi[dst])


class Band(_RangePattern):
    """Query ``t`` attends keys ``s`` with ``t - left <= s <= t + right`` (local positions).

    ``left=None`` / ``right=None`` mean unbounded. ``dense() == Band(None, None)``,
    ``causal() == Band(None, 0)``, ``window(w) == Band(w, w)``; bands are closed under ``&``
    and ``|`` (both contain the diagonal), which lets the attention layer pick a fast backend.
    """

    def __init__(self, left: Optional[int] = None, right: Optional[int] = None):
        self.left = None if left is None else _check_int("left", left, 0)
        self.right = None if right is None else _check_int("right", right, 0)

    @property
    def is_dense(self) -> bool:
        return self.left is None and self.right is None

    @property
    def is_causal(self) -> bool:
        return self.left is None and self.right == 0

    def _ranges(self, q, k):
        n_key = k.sizes[q.batch]
        lo = torch.zeros_like(q.pos) if self.left is None else (q.pos - self.left).clamp(min=0)
        lo = torch.minimum(lo, n_key)
        hi = n_key if self.right is None else torch.minimum(q.pos + self.right + 1, n_key)
        base = k.ptr[q.batch]
        return base + lo, base + hi

    def _path_closed_form(self, n, num_layers):
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

    def __eq__(self, other):
        return isinstance(other, Band) and (self.left, self.right) == (other.left, other.right)

    def __hash__(self):
        return hash((Band, self.left, self.right))

    def __repr__(self):
        if self.is_dense:
            return "dense()"
        if self.is_causal:
            return "causal()"
        if self.left == self.right:
            return f"window({self.left})"
        if self.right == 0:
            return f"causal() & window({self.left})"
        return f"Band(left={self.left}, right={self.right})"


def dense() -> Band:
    """Every query attends every key of its example (the complete graph, self included)."""
    return Band(None, None)


def causal() -> Band:
    """Query ``t`` attends keys ``s <= t`` (a DAG on the sequence)."""
    return Band(None, 0)


def window(w: int) -> Band:
    """Query ``t`` attends keys ``s`` with ``|t - s| <= w``: the w-th power of the path graph."""
    return Band(_check_int("w", w, 1), w)


class _Block(_RangePattern):
    def __init__(self, size: int):
        self.size = _check_int("size", size, 1)

    def _ranges(self, q, k):
        n_key = k.sizes[q.batch]
        lo = torch.minimum(q.pos // self.size * self.size, n_key)
        hi = torch.minimum(lo + self.size, n_key)
        base = k.ptr[q.batch]
        return base + lo, base + hi

    def __repr__(self):
        return f"block({self.size})"


def block(size: int) -> Pattern:
    """Block-diagonal attention: positions are cut into blocks of ``size``; each attends its block."""
    return _Block(size)


class _RangeIntersection(_RangePattern):
    def __init__(self, a: _RangePattern, b: _RangePattern):
        self.a, self.b = a, b
        self.bipartite = a.bipartite or b.bipartite

    def _ranges(self, q, k):
        lo_a, hi_a = self.a._ranges(q, k)
        lo_b, hi_b = self.b._ranges(q, k)
        return torch.maximum(lo_a, lo_b), torch.minimum(hi_a, hi_b)

    def __repr__(self):
        return f"({self.a!r} & {self.b!r})"


# --------------------------------------------------------------------------- candidate patterns


class _Dilated(Pattern):
    def __init__(self, w: int, dilation: int):
        self.w = _check_int("w", w, 1)
        self.dilation = _check_int("dilation", dilation, 1)

    def _edges(self, q, k):
        offsets = torch.arange(-self.w, self.w + 1, device=q.ptr.device) * self.dilation
        local = q.pos.unsqueeze(1) + offsets  # [Nq, 2w + 1]
        valid = (local >= 0) & (local < k.sizes[q.batch].unsqueeze(1))
        return _candidates_to_edges(local + k.ptr[q.batch].unsqueeze(1), valid)

    def _contains(self, src, dst, q, k):
        same = k.batch[src] == q.batch[dst]
        diff = k.pos[src] - q.pos[dst]
        return same & (diff.abs() <= self.w * self.dilation) & (diff % self.dilation == 0)

    def __repr__(self):
        return f"dilated({self.w}, dilation={self.dilation})"


def dilated(w: int, dilation: int) -> Pattern:
    """Dilated window: query ``t`` attends ``t + m * dilation`` for ``m`` in ``-w..w``."""
    return _Dilated(w, dilation)


class _GlobalTokens(Pattern):
    def __init__(self, indices):
        if isinstance(indices, Tensor):
            if indices.dtype.is_floating_point or indices.dtype == torch.bool:
                raise TypeError(f"indices must hold integer positions, got dtype {indices.dtype}")
            indices = indices.flatten().tolist()
        if isinstance(indices, Integral):
            indices = [indices]
        if not isinstance(indices, (list, tuple)):
            raise TypeError(f"indices must be a list of int positions, got {type(indices).__name__}")
        for v in indices:
            _check_int("indices[...]", v, 0)
        self.indices = sorted(set(int(v) for v in indices))

    def _is_global(self, pos: Tensor) -> Tensor:
        return torch.isin(pos, torch.tensor(self.indices, dtype=torch.long, device=pos.device))

    def _edges(self, q, k):
        device = q.ptr.device
        g = torch.tensor(self.indices, dtype=torch.long, device=device)
        # Global queries read their whole example ...
        full = self._is_global(q.pos)
        base = k.ptr[q.batch]
        rows = _expand_ranges(base, torch.where(full, base + k.sizes[q.batch], base))
        # ... and every query reads the global keys.
        valid = g.unsqueeze(0) < k.sizes[q.batch].unsqueeze(1)
        cols = _candidates_to_edges(base.unsqueeze(1) + g, valid)
        return _merge_edges(rows, cols, k.num_nodes)

    def _contains(self, src, dst, q, k):
        same = k.batch[src] == q.batch[dst]
        return same & (self._is_global(q.pos[dst]) | self._is_global(k.pos[src]))

    def _has_hub(self, n):
        return bool(self.indices) and self.indices[0] < n

    def __repr__(self):
        return f"global_tokens({self.indices})"


def global_tokens(indices) -> Pattern:
    """Global positions (local indices) attend every key and are attended by every query.

    Positions beyond an example's length are ignored for that example.
    """
    return _GlobalTokens(indices)


class _Random(Pattern):
    def __init__(self, num_keys: int, seed: int):
        self.num_keys = _check_int("num_keys", num_keys, 1)
        if seed is None:
            raise ValueError(
                "seed must be an int: random patterns are reproducible by construction "
                "(the same seed gives the same keys on every call)"
            )
        self.seed = _check_int("seed", seed, 0)

    def _edges(self, q, k):
        n = k.sizes[q.batch]  # [Nq] number of keys available to each query
        r = self.num_keys
        device = q.ptr.device
        # Floyd's algorithm, vectorised over queries: r distinct keys from range(n) per query.
        chosen = torch.full((q.num_nodes, r), -1, dtype=torch.long, device=device)
        seed = torch.full_like(n, self.seed)
        for step in range(r):
            top = n - r + step  # Floyd draws from range(top + 1) at this step
            h = _hash(seed, n, q.pos, torch.full_like(n, step))
            draw = h % (top + 1).clamp(min=1)
            taken = (chosen[:, :step] == draw.unsqueeze(1)).any(1)
            chosen[:, step] = torch.where(taken, top, draw)
        # Examples shorter than r keys: take all of them.
        short = n <= r
        if bool(short.any()):
            every = torch.arange(r, device=device).expand(q.num_nodes, r)
            chosen = torch.where(short.unsqueeze(1), every, chosen)
        chosen, _ = chosen.sort(1)
        valid = chosen < n.unsqueeze(1)
        return _candidates_to_edges(chosen + k.ptr[q.batch].unsqueeze(1), valid)

    def __repr__(self):
        return f"random({self.num_keys}, seed={self.seed})"


def random(num_keys: int, seed: int) -> Pattern:
    """Each query attends ``num_keys`` distinct keys of its example drawn at random.

    The draw is a deterministic function of ``(seed, example length, query position)``:
    the same example gets the same keys in any batch and on every call. Examples with fewer
    than ``num_keys`` keys are attended entirely.
    """
    return _Random(num_keys, seed)


def bigbird(window: int, num_global: int, num_random: int, seed: int) -> Pattern:
    """BigBird (token level): ``window(window) | global_tokens(range(num_global)) | random(...)``.

    ``num_global`` or ``num_random`` may be 0 to leave that part out.
    """
    pattern: Pattern = Band(_check_int("window", window, 1), window)
    if _check_int("num_global", num_global, 0):
        pattern = pattern | _GlobalTokens(list(range(num_global)))
    if _check_int("num_random", num_random, 0):
        pattern = pattern | _Random(num_random, seed)
    return pattern


# --------------------------------------------------------------------------- graph patterns


class _Graph(Pattern):
    position_based = False

    def __init__(self, edge_index: Tensor, self_loops: bool = True, k: int = 1):
        self.graph_edge_index = _check_edge_index(edge_index)
        if not isinstance(self_loops, bool):
            raise TypeError(f"self_loops must be a bool, got {type(self_loops).__name__}")
        self.self_loops = self_loops
        self.k = k

    def _edges(self, q, k):
        ei = self.graph_edge_index.to(q.ptr.device)
        n = q.num_nodes
        if ei.numel() and int(ei.max()) >= n:
            raise ValueError(
                f"edge_index points outside the graph: node {int(ei.max())} but ptr[-1] is {n}"
            )
        if ei.numel() and bool((q.batch[ei[0]] != q.batch[ei[1]]).any()):
            raise ValueError("edge_index has edges between different examples of ptr")
        if self.k == 1:
            if self.self_loops:
                loops = torch.arange(n, device=ei.device).expand(2, n)
                ei = torch.cat([ei, loops], 1)
            # Sort by target then source and drop duplicates.
            key = torch.unique(ei[1] * max(n, 1) + ei[0])
            return torch.stack([key % max(n, 1), key // max(n, 1)])
        # k hops: boolean powers of (A + I), A[i, j] = 1 for an edge j -> i.
        ei_np = ei.cpu().numpy()
        adj = scipy.sparse.csr_matrix(
            (np.ones(ei_np.shape[1], dtype=np.int8), (ei_np[1], ei_np[0])), shape=(n, n)
        )
        step = (adj + scipy.sparse.identity(n, dtype=np.int8, format="csr")).astype(bool)
        reach = step
        for _ in range(self.k - 1):
            reach = (reach @ step).astype(bool)
        reach = reach.tocoo()
        key = torch.from_numpy(reach.row.astype(np.int64) * max(n, 1) + reach.col)
        key = key.sort().values.to(q.ptr.device)
        return torch.stack([key % max(n, 1), key // max(n, 1)])

    def __repr__(self):
        e = self.graph_edge_index.size(1)
        if self.k == 1:
            return f"graph(<{e} edges>, self_loops={self.self_loops})"
        return f"khop(<{e} edges>, k={self.k})"


def graph(edge_index: Tensor, self_loops: bool = True) -> Pattern:
    """Attention along the edges of a graph (``edge_index`` in the batch's global numbering).

    With ``self_loops=True`` every node also attends itself.
    """
    return _Graph(edge_index, self_loops)


def khop(edge_index: Tensor, k: int) -> Pattern:
    """Query ``i`` attends every node ``j`` from which a path of at most ``k`` edges leads to ``i``.

    Self included (0 hops). On the path graph (both directions), ``khop(path, w) == window(w)``.
    """
    return _Graph(edge_index, True, _check_int("k", k, 1))


# --------------------------------------------------------------------------- cross and combinators


class _Cross(Pattern):
    bipartite = True

    def __init__(self, pattern: Pattern):
        _check_pattern(pattern, "pattern")
        if not pattern.position_based:
            raise ValueError(f"cross() needs a position-based pattern, got {pattern!r}")
        self.pattern = pattern

    def _edges(self, q, k):
        return self.pattern._edges(q, k)

    def _contains(self, src, dst, q, k):
        return self.pattern._contains(src, dst, q, k)

    def __repr__(self):
        return f"cross({self.pattern!r})"


def cross(pattern: Optional[Pattern] = None) -> Pattern:
    """Cross-attention: queries of one batch (``ptr``) attend keys of another (``key_ptr``).

    Query ``t`` of example ``b`` attends the keys of example ``b`` that ``pattern`` allows,
    in local positions (default: all of them, as encoder-decoder attention does).
    """
    return _Cross(dense() if pattern is None else pattern)


class _Union(Pattern):
    def __init__(self, a: Pattern, b: Pattern):
        self.a, self.b = a, b
        self.position_based = a.position_based and b.position_based
        self.bipartite = a.bipartite or b.bipartite

    def _edges(self, q, k):
        return _merge_edges(self.a._edges(q, k), self.b._edges(q, k), k.num_nodes)

    def _contains(self, src, dst, q, k):
        return self.a._contains(src, dst, q, k) | self.b._contains(src, dst, q, k)

    def _has_hub(self, n):
        return self.a._has_hub(n) or self.b._has_hub(n)

    def __repr__(self):
        return f"({self.a!r} | {self.b!r})"


class _Intersection(Pattern):
    def __init__(self, a: Pattern, b: Pattern):
        # Generate from the side that is not a (possibly huge) range, filter by the other.
        if isinstance(a, _RangePattern) and not isinstance(b, _RangePattern):
            a, b = b, a
        self.a, self.b = a, b
        self.position_based = a.position_based and b.position_based
        self.bipartite = a.bipartite or b.bipartite

    def _edges(self, q, k):
        ei = self.a._edges(q, k)
        return ei[:, self.b._contains(ei[0], ei[1], q, k)]

    def _contains(self, src, dst, q, k):
        return self.a._contains(src, dst, q, k) & self.b._contains(src, dst, q, k)

    def __repr__(self):
        return f"({self.a!r} & {self.b!r})"


def _union(a: Pattern, b: Pattern) -> Pattern:
    if isinstance(a, Band) and isinstance(b, Band):
        # Both intervals contain the query itself, so their union is an interval too.
        def wider(x, y):
            return None if x is None or y is None else max(x, y)

        return Band(wider(a.left, b.left), wider(a.right, b.right))
    return _Union(a, b)


def _intersection(a: Pattern, b: Pattern) -> Pattern:
    if isinstance(a, Band) and isinstance(b, Band):
        def narrower(x, y):
            return y if x is None else x if y is None else min(x, y)

        return Band(narrower(a.left, b.left), narrower(a.right, b.right))
    if isinstance(a, _RangePattern) and isinstance(b, _RangePattern):
        return _RangeIntersection(a, b)
    return _Intersection(a, b)


# --------------------------------------------------------------------------- names


_FORMS = "dense, causal, window:W, dilated:W:DILATION, block:SIZE, global:I[:J...], random:KEYS:SEED, bigbird:WINDOW:GLOBAL:RANDOM:SEED"
_BY_NAME = {
    "dense": (dense, 0),
    "causal": (causal, 0),
    "window": (window, 1),
    "dilated": (dilated, 2),
    "block": (block, 1),
    "global": (lambda *i: global_tokens(list(i)), None),
    "random": (random, 2),
    "bigbird": (bigbird, 4),
}


def parse(spec: str) -> Pattern:
    """A pattern from its name, as command lines write it.

    ``name[:arg[:arg...]]`` with names ``dense``, ``causal``, ``window:W``,
    ``dilated:W:DILATION``, ``block:SIZE``, ``global:I[:J...]``, ``random:KEYS:SEED``,
    ``bigbird:WINDOW:GLOBAL:RANDOM:SEED``, combined with ``&`` (intersection, binds tighter)
    and ``|`` (union): ``causal&window:16``, ``window:64|global:0``.

    >>> parse("causal&window:16")
    causal() & window(16)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"pattern spec must be a non-empty string, got {spec!r}")
    union = None
    for part in spec.replace(" ", "").split("|"):
        inter = None
        for atom in part.split("&"):
            name, *args = atom.split(":")
            if name not in _BY_NAME:
                raise ValueError(f"unknown pattern {name!r} in {spec!r}; valid names: {', '.join(_BY_NAME)}")
            make, arity = _BY_NAME[name]
            if (arity is not None and len(args) != arity) or (arity is None and not args):
                raise ValueError(f"pattern {atom!r} takes {arity if arity is not None else 'one or more'} "
                                 f"integer argument(s); forms: {_FORMS}")
            try:
                values = [int(a) for a in args]
            except ValueError:
                raise ValueError(f"pattern arguments must be integers, got {atom!r}") from None
            p = make(*values)
            inter = p if inter is None else inter & p
        union = inter if union is None else union | inter
    return union
