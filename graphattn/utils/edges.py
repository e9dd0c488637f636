"""Sorted edge lists: keys, membership, merging and ranges, in time and memory linear in E.

Patterns keep ``edge_index: [2, E]`` sorted by query (row 1), then key (row 0), without
duplicates. One integer per edge, ``query * num_keys + key``, sorts the same way, so set
operations on edge lists become sorted searches (``torch.searchsorted``) instead of sorts.
torch and PyG have no merge of two sorted edge lists or membership test against one: they are
written here once, for the patterns and the graph models alike.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["edge_keys", "keys_to_edges", "sorted_isin", "merge_edges", "expand_ranges", "candidates_to_edges",
           "coalesce_edges"]


def edge_keys(edge_index: Tensor, num_keys: int) -> Tensor:
    """One int64 per edge that sorts as (query, key): ``edge_index[1] * num_keys + edge_index[0]``."""
    return edge_index[1] * max(num_keys, 1) + edge_index[0]


def keys_to_edges(keys: Tensor, num_keys: int) -> Tensor:
    """The inverse of :func:`edge_keys`: ``[2, E]``."""
    n = max(num_keys, 1)
    return torch.stack([keys % n, keys // n])


def coalesce_edges(edge_index: Tensor, num_keys: int) -> Tensor:
    """``edge_index`` sorted by (query, key) without duplicates."""
    return keys_to_edges(torch.unique(edge_keys(edge_index, num_keys)), num_keys)


def sorted_isin(keys: Tensor, sorted_ref: Tensor) -> Tensor:
    """``torch.isin(keys, sorted_ref)`` for a sorted ``sorted_ref``, by binary search: bool ``[len(keys)]``."""
    if sorted_ref.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    idx = torch.searchsorted(sorted_ref, keys).clamp_(max=sorted_ref.numel() - 1)
    return sorted_ref[idx] == keys


def merge_edges(a: Tensor, b: Tensor, num_keys: int) -> Tensor:
    """Union of two sorted, duplicate-free edge lists, by merging instead of sorting."""
    if a.size(1) < b.size(1):
        a, b = b, a
    if b.size(1) == 0:
        return a
    key_a = edge_keys(a, num_keys)
    key_b = edge_keys(b, num_keys)
    keep = ~sorted_isin(key_b, key_a)
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


def expand_ranges(lo: Tensor, hi: Tensor) -> Tensor:
    """Edges ``lo[i] <= j < hi[i]`` for every query ``i``, sorted by (i, j): ``[2, E]``.

    Written to keep peak memory near the size of the output (about 24 bytes an edge).
    """
    counts = (hi - lo).clamp_(min=0)
    num_edges = int(counts.sum())
    out = torch.empty(2, num_edges, dtype=torch.long, device=lo.device)
    if num_edges == 0:
        return out
    out[1] = torch.repeat_interleave(torch.arange(lo.numel(), device=lo.device), counts, output_size=num_edges)
    # j = lo[i] + (e - first edge of i)
    shift = lo - (torch.cumsum(counts, 0) - counts)
    torch.arange(num_edges, out=out[0])
    out[0] += shift[out[1]]
    return out


def candidates_to_edges(keys: Tensor, valid: Tensor) -> Tensor:
    """Edges from a ``[Nq, K]`` table of candidate keys per query (each row sorted, unique)."""
    dst = torch.arange(keys.size(0), device=keys.device).unsqueeze(1).expand_as(keys)
    return torch.stack([keys[valid], dst[valid]])
