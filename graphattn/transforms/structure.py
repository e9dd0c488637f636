r"""Graph structure that attention reads besides the pattern's pairs: which pairs are graph edges
(and their features), and how many hops apart the two ends of a pair are (Graphormer's spatial
encoding). Computed from the graph alone, so once per graph, never inside a model's ``forward``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
from torch import Tensor

from graphattn.utils.checks import check_int
from graphattn.utils.edges import edge_keys, sorted_isin

__all__ = ["pattern_edge_attr", "shortest_path_buckets"]


def pattern_edge_attr(edge_index: Tensor, edge_attr: Tensor, pairs: Tensor, num_nodes: int) -> Tensor:
    r"""Features of the graph edge ``j -> i`` for every pair of a pattern, zeros for non-edges.

    Args:
        edge_index (LongTensor): the graph's edges :math:`(2, E)`.
        edge_attr (Tensor): their features :math:`(E, F)`.
        pairs (LongTensor): the pattern's (key, query) pairs :math:`(2, E_p)`.
        num_nodes (int): nodes of the batch.

    Returns:
        Tensor :math:`(E_p, F)`. Of parallel edges, one's features are taken.
    """
    out = edge_attr.new_zeros(pairs.size(1), edge_attr.size(1))
    if edge_index.size(1) == 0 or pairs.size(1) == 0:
        return out
    keys, order = torch.sort(edge_keys(edge_index, num_nodes), stable=True)  # first of parallel edges
    wanted = edge_keys(pairs, num_nodes)
    pos = torch.searchsorted(keys, wanted).clamp_(max=keys.numel() - 1)
    found = keys[pos] == wanted
    out[found] = edge_attr[order[pos[found]]]
    return out


def shortest_path_buckets(edge_index: Tensor, pairs: Tensor, ptr: Tensor, max_distance: int) -> Tensor:
    r"""Graphormer's spatial bucket of each pattern pair: hops from key ``j`` to query ``i``.

    Bucket ``0`` is the node itself, ``1 .. max_distance`` the number of hops along
    ``edge_index`` (clipped to ``max_distance``), ``max_distance + 1`` "unreachable". Self pairs
    and graph edges need no search; for the other pairs :func:`scipy.sparse.csgraph.shortest_path`
    runs on each graph that has some (breadth-first, unweighted, directed as ``edge_index``).

    Args:
        edge_index (LongTensor): graph edges :math:`(2, E)`, row 0 source, row 1 target.
        pairs (LongTensor): pattern pairs :math:`(2, E_p)` sorted by query (as patterns give them).
        ptr (LongTensor): :math:`(B + 1)` offsets of the graphs; no edge crosses two graphs.
        max_distance (int): the largest distance with a bucket of its own (:math:`\ge 1`).

    Returns:
        LongTensor :math:`(E_p)` with values in ``[0, max_distance + 1]``.
    """
    max_distance = check_int("max_distance", max_distance, 1)
    unreachable = max_distance + 1
    num_nodes = int(ptr[-1])
    src, dst = pairs
    bucket = torch.full((pairs.size(1),), unreachable, dtype=torch.long, device=pairs.device)
    bucket[src == dst] = 0
    if edge_index.size(1):
        is_edge = sorted_isin(edge_keys(pairs, num_nodes), torch.unique(edge_keys(edge_index, num_nodes)))
        bucket[is_edge & (src != dst)] = 1
    rest = bucket == unreachable
    if not bool(rest.any()) or edge_index.size(1) == 0:
        return bucket
    # Per graph: scipy's BFS from the keys of the pairs still without a bucket.
    ptr_np = ptr.cpu().numpy()
    ei = edge_index.cpu().numpy()
    graph_of_edge = np.searchsorted(ptr_np, ei[1], side="right") - 1
    order = np.argsort(graph_of_edge, kind="stable")
    edge_ptr = np.searchsorted(graph_of_edge[order], np.arange(len(ptr_np)))
    rest_idx = rest.nonzero().squeeze(1).cpu().numpy()
    src_np, dst_np = src.cpu().numpy()[rest_idx], dst.cpu().numpy()[rest_idx]
    graph_of_pair = np.searchsorted(ptr_np, dst_np, side="right") - 1
    values = np.full(rest_idx.size, unreachable, dtype=np.int64)
    for b in np.unique(graph_of_pair):
        lo, n = ptr_np[b], ptr_np[b + 1] - ptr_np[b]
        local = ei[:, order[edge_ptr[b]:edge_ptr[b + 1]]] - lo
        if local.shape[1] == 0:
            continue
        adj = scipy.sparse.csr_matrix((np.ones(local.shape[1]), (local[0], local[1])), shape=(n, n))
        mine = np.nonzero(graph_of_pair == b)[0]
        sources, inverse = np.unique(src_np[mine] - lo, return_inverse=True)
        dist = scipy.sparse.csgraph.shortest_path(adj, directed=True, unweighted=True, indices=sources)
        d = dist[inverse, dst_np[mine] - lo]  # [pairs of graph b]
        values[mine] = np.where(np.isinf(d), unreachable, np.minimum(d, max_distance))
    bucket[rest] = torch.from_numpy(values).to(bucket.device)
    return bucket
