"""Reach statistics of a pattern: the fewest layers after which every position has heard from
every other one (maximum path length), and how many positions reach each query in L layers.

Bands have closed forms and patterns with a hub (a global token) need no search; every other
pattern is searched breadth-first with scipy, one example at a time.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
from torch import Tensor

from graphattn.utils.batch import Layout

__all__ = ["bfs_reach", "hub_reach", "reach"]


def hub_reach(edge_index: Tensor, n: int, num_layers: int) -> tuple[float, Tensor]:
    """Reach of one example with a hub: a position that reads everything and is read by all.

    The hub reads everything in layer 1 and everyone reads it in layer 2, so every distance is
    0 (self), 1 (an edge) or 2: no search needed, which keeps BigBird's statistics linear in E.
    """
    if n <= 1:
        return 0, torch.ones(n, dtype=torch.long)
    src, dst = edge_index
    loops = torch.bincount(dst[src == dst], minlength=n)
    one_hop = torch.bincount(dst, minlength=n) + 1 - loops
    path = 1 if bool((one_hop == n).all()) else 2
    return path, one_hop if num_layers == 1 else torch.full((n,), n, dtype=torch.long)


def bfs_reach(edge_index: Tensor, num_nodes: int, num_layers: int = 1, chunk: int = 1024) -> tuple[float, Tensor]:
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
    graph = scipy.sparse.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])),
                                    shape=(num_nodes, num_nodes))
    worst = 0.0
    rf = np.zeros(num_nodes, dtype=np.int64)
    for start in range(0, num_nodes, chunk):  # chunks of sources bound the dense [chunk, n] result
        sources = np.arange(start, min(start + chunk, num_nodes))
        dist = scipy.sparse.csgraph.shortest_path(graph, directed=True, unweighted=True, indices=sources)
        worst = max(worst, float(dist.max()))
        rf += (dist <= num_layers).sum(0)
    path = math.inf if math.isinf(worst) else int(worst)
    return path, torch.from_numpy(rf)


def reach(pattern, edge_index: Tensor, query: Layout, num_layers: int) -> tuple[float, Tensor]:
    """Max path length over the examples of ``query`` and receptive field per query ``[N]``.

    Uses the pattern's hooks :meth:`~graphattn.patterns.Pattern.closed_form_reach` and
    :meth:`~graphattn.patterns.Pattern.has_hub` where they answer, a search otherwise.
    """
    rf = torch.zeros(query.num_nodes, dtype=torch.long)
    worst: float = 0
    sizes, starts = query.sizes.tolist(), query.ptr.tolist()
    cache: dict[int, tuple] = {}  # position-based patterns look the same on every example of one length
    # Edges are sorted by query, so each example's edges are one contiguous slice.
    edge_ptr = torch.searchsorted(edge_index[1].cpu(), query.ptr.cpu()).tolist()
    for b, n in enumerate(sizes):
        if n == 0:
            continue
        if pattern.position_based and n in cache:
            path, rf_b = cache[n]
        else:
            closed = pattern.closed_form_reach(n, num_layers)
            if closed is not None:
                path, rf_b = closed
            else:
                local = edge_index[:, edge_ptr[b]:edge_ptr[b + 1]].cpu() - starts[b]
                search = hub_reach if pattern.has_hub(n) else bfs_reach
                path, rf_b = search(local, n, num_layers)
            cache[n] = (path, rf_b)
        worst = max(worst, path)
        rf[starts[b]:starts[b] + n] = rf_b
    return worst, rf
