r"""Hop counts on a graph by breadth-first expansion, frontier by frontier, in O(pairs).

A pair ``(j, i)`` is ``d`` hops apart when the shortest path from key ``j`` to query ``i`` along
the edges (row 0 source, row 1 target) has ``d`` edges. :func:`hop_expansion` walks backwards
from each query over its in-edges, one level at a time, and keeps every pair it reaches with the
level it reached it at: the pairs of ``khop(k)`` and their hop counts come out of one pass, in
time and memory proportional to the pairs (times the in-degree of the frontier), never to
``N ** 2``. :func:`hop_counts` gives the hop count of any given pairs (a wider pattern's) by the
same walk, clipped at a depth.

scipy's ``csgraph.shortest_path`` returns a dense ``[sources, N]`` matrix and boolean sparse
matrix powers fill in; torch and PyG have no sparse multi-source BFS that keeps the pairs, so
it is written here, vectorised over all queries of a chunk.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch_geometric.index import index2ptr

from graphattn.utils.checks import check_edge_index, check_int
from graphattn.utils.edges import expand_ranges, sorted_isin

__all__ = ["InCSR", "hop_expansion", "hop_counts", "HOP_BUDGET"]

#: candidate pairs one expansion step may hold at once; chunks of queries are sized to it
HOP_BUDGET = 1 << 23
#: bytes a stored pair costs (key and query int64, a one-byte hop count)
PAIR_BYTES = 17


class InCSR(NamedTuple):
    """The in-edges of every node: the sources of node ``i`` are ``col[rowptr[i]:rowptr[i + 1]]``."""

    rowptr: Tensor  # [N + 1]
    col: Tensor  # [E'] sources, duplicates and self loops removed

    @staticmethod
    def build(edge_index: Tensor, num_nodes: int) -> "InCSR":
        edge_index = check_edge_index(edge_index)
        src, dst = edge_index
        keep = src != dst  # a self loop never shortens a path
        keys = torch.unique(dst[keep] * max(num_nodes, 1) + src[keep])
        return InCSR(index2ptr(keys // max(num_nodes, 1), num_nodes), keys % max(num_nodes, 1))


def _expand_chunk(csr: InCSR, queries: Tensor, depth: int, num_nodes: int,
                  stop_at: Optional[Tensor] = None) -> tuple[Tensor, Tensor, int]:
    """Keys ``local query * N + key`` (sorted) within ``depth`` hops of ``queries`` and their hop
    counts (uint8); the largest number of candidates one level held. With ``stop_at`` (sorted
    keys), the walk stops once all of them are reached."""
    n = max(num_nodes, 1)
    local = torch.arange(queries.numel(), device=queries.device)
    visited = local * n + queries  # level 0: every query is 0 hops from itself (sorted: queries are)
    levels, hops = [visited], [torch.zeros(queries.numel(), dtype=torch.uint8, device=queries.device)]
    front_q, front_node, peak = local, queries, queries.numel()
    for d in range(1, depth + 1):
        if front_node.numel() == 0 or (stop_at is not None and bool(sorted_isin(stop_at, visited).all())):
            break
        # Every in-neighbour w of a frontier node u (edge w -> u) is one hop further from the query.
        pos = expand_ranges(csr.rowptr[front_node], csr.rowptr[front_node + 1])
        peak = max(peak, pos.size(1))
        cand = torch.unique(front_q[pos[1]] * n + csr.col[pos[0]])
        del pos
        new = cand[~sorted_isin(cand, visited)]
        levels.append(new)
        hops.append(torch.full((new.numel(),), d, dtype=torch.uint8, device=new.device))
        visited = torch.sort(torch.cat([visited, new])).values
        front_q, front_node = new // n, new % n
    keys = torch.cat(levels)
    order = torch.argsort(keys)
    return keys[order], torch.cat(hops)[order], peak


def _chunks(queries: Tensor, csr: InCSR, depth: int, budget: int):
    """Consecutive slices of ``queries`` whose first expansion level stays within ``budget``;
    later levels are bounded by shrinking the next chunk when one ran over."""
    degree = (csr.rowptr[1:] - csr.rowptr[:-1])[queries].double()
    # Candidates grow about as the mean of degree ** depth (hubs count): start there, then adapt.
    guess = max(1.0, float((degree ** min(max(depth, 1), 3)).mean()) if degree.numel() else 1.0)
    start, size = 0, max(1, int(budget / guess))
    while start < queries.numel():
        stop = min(queries.numel(), start + size)
        peak = yield queries[start:stop]
        ratio = budget / max(peak or 1, 1)
        size = max(1, min(4 * size, int(size * ratio))) if peak else size
        start = stop


def hop_expansion(edge_index: Tensor, num_nodes: int, depth: int, queries: Optional[Tensor] = None,
                  max_pairs: Optional[int] = None) -> tuple[Tensor, Tensor]:
    r"""Every pair within ``depth`` hops and its hop count: the ``khop(depth)`` pattern with buckets.

    Args:
        edge_index (LongTensor): graph edges :math:`(2, E)`, row 0 source, row 1 target, global
            numbering (edges of different examples never meet, so neither do their pairs).
        num_nodes (int): nodes of the graph (or batch).
        depth (int): largest hop count kept (``>= 0``).
        queries (LongTensor, optional): sorted, distinct query nodes to expand (default: all).
        max_pairs (int, optional): refuse, with a ``ValueError`` naming the memory it would take,
            when the pairs would exceed this many (estimated from the chunks done so far).

    Returns:
        ``(pairs (2, P), hops (P,) uint8)``: row 0 key :math:`j`, row 1 query :math:`i`, sorted
        by query then key, self pairs included (0 hops).
    """
    num_nodes = check_int("num_nodes", num_nodes, 0)
    depth = check_int("depth", depth, 0)
    device = edge_index.device
    if queries is None:
        queries = torch.arange(num_nodes, device=device)
    csr = InCSR.build(edge_index, num_nodes)
    n = max(num_nodes, 1)
    keys, hops, done, total = [], [], 0, 0
    chunks = _chunks(queries, csr, depth, HOP_BUDGET)
    chunk = next(chunks, None)
    while chunk is not None:
        local, hop, peak = _expand_chunk(csr, chunk, depth, num_nodes)
        done, total = done + chunk.numel(), total + local.numel()
        if max_pairs is not None and total * queries.numel() / done > max_pairs:
            estimate = total * queries.numel() / done
            raise ValueError(
                f"khop:{depth} has about {estimate:,.0f} pairs on this graph ({num_nodes:,} nodes, "
                f"{edge_index.size(1):,} edges), more than max_pairs={max_pairs:,}: it would need about "
                f"{estimate * PAIR_BYTES / 2**30:.1f} GiB. Use fewer hops, a sampled subgraph (NeighborLoader) "
                f"or raise max_pairs")
        keys.append(chunk[local // n] * n + local % n)  # global query * N + key: 8 bytes a pair until the end
        hops.append(hop)
        del local
        chunk = chunks.send(peak) if done < queries.numel() else None
    # [2, P] filled chunk by chunk, each freed once copied: a peak of about 25 bytes a pair.
    out = torch.empty(2, total, dtype=torch.long, device=device)
    start = 0
    for i in range(len(keys)):
        part, keys[i] = keys[i], None
        torch.remainder(part, n, out=out[0, start:start + part.numel()])
        torch.div(part, n, rounding_mode="floor", out=out[1, start:start + part.numel()])
        start += part.numel()
        del part
    return out, torch.cat(hops) if hops else torch.empty(0, dtype=torch.uint8, device=device)


def hop_counts(edge_index: Tensor, pairs: Tensor, num_nodes: int, max_distance: int) -> Tensor:
    r"""Hops from key ``j`` to query ``i`` of every pair, ``max_distance + 1`` beyond ``max_distance``.

    The walk from each query stops at ``max_distance`` levels, or earlier once all its pairs are
    reached, so the cost is that of ``khop(max_distance)`` restricted to the pairs' queries (for a
    dense pattern on small graphs: a BFS per graph; on a large graph keep ``max_distance`` small).

    Args:
        edge_index (LongTensor): graph edges :math:`(2, E)`.
        pairs (LongTensor): pairs :math:`(2, P)` sorted by query (as patterns give them).
        num_nodes (int): nodes of the graph (or batch).
        max_distance (int): the largest hop count told apart (``>= 0``).

    Returns:
        LongTensor :math:`(P)` with values in ``[0, max_distance + 1]``.
    """
    max_distance = check_int("max_distance", max_distance, 0)
    pairs = check_edge_index(pairs, "pairs")
    out = torch.full((pairs.size(1),), max_distance + 1, dtype=torch.long, device=pairs.device)
    if pairs.size(1) == 0:
        return out
    if bool((pairs[1, 1:] < pairs[1, :-1]).any()):
        raise ValueError("pairs must be sorted by query (row 1), as patterns give them")
    n = max(num_nodes, 1)
    csr = InCSR.build(edge_index, num_nodes)
    queries, counts = torch.unique_consecutive(pairs[1], return_counts=True)
    pair_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    chunks = _chunks(queries, csr, max_distance, HOP_BUDGET)
    chunk, start = next(chunks, None), 0
    while chunk is not None:
        stop = start + chunk.numel()
        lo, hi = int(pair_ptr[start]), int(pair_ptr[stop])
        local = torch.repeat_interleave(torch.arange(chunk.numel(), device=pairs.device), counts[start:stop])
        wanted = local * n + pairs[0, lo:hi]  # sorted: pairs are sorted by query, then key
        keys, hop, peak = _expand_chunk(csr, chunk, max_distance, num_nodes, stop_at=torch.unique(wanted))
        idx = torch.searchsorted(keys, wanted).clamp_(max=max(keys.numel() - 1, 0))
        found = keys[idx] == wanted
        out[lo:hi][found] = hop[idx[found]].long()
        start = stop
        chunk = chunks.send(peak) if start < queries.numel() else None
    return out
