r"""Which pairs one call of :class:`~graphattn.nn.GraphMultiheadAttention` attends, from how the
caller gave them: an ``edge_index`` (LongTensor, ``EdgeIndex`` or torch sparse adjacency), a
pattern on a layout ``ptr``, or a graph pattern on a graph. Pure functions of their arguments.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch_geometric import EdgeIndex

from graphattn.patterns import Band, Cross, Pattern
from graphattn.utils.batch import ptr_to_batch
from graphattn.utils.checks import check_ptr, eager_only
from graphattn.utils.edges import edge_keys, sorted_isin

__all__ = ["Pairs", "as_band", "as_edge_index", "graph_edges_first", "sorted_edges", "pattern_layout", "band_has_key"]


def as_band(pattern: Optional[Pattern]) -> Optional[Band]:
    """The band a pattern is (cross-attention wraps one), or None."""
    inner = pattern.pattern if isinstance(pattern, Cross) else pattern
    return inner if isinstance(inner, Band) else None


def as_edge_index(edge_index, num_queries: int, num_keys: int) -> Optional[Tensor]:
    """``edge_index [2, E]`` from what PyG's convolutions accept: a LongTensor, an ``EdgeIndex``,
    or a torch sparse adjacency (COO/CSR/CSC) in PyG's transposed form ``[N_queries, N_keys]``
    (row = query ``i``, column = key ``j``; values are ignored)."""
    if isinstance(edge_index, EdgeIndex):
        return edge_index.as_tensor()
    if isinstance(edge_index, Tensor) and edge_index.layout in (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc):
        if tuple(edge_index.shape) != (num_queries, num_keys):
            raise ValueError(f"a sparse adjacency must have shape [N_queries, N_keys] = [{num_queries}, {num_keys}] "
                             f"(PyG's transposed form), got {tuple(edge_index.shape)}")
        rows, cols = edge_index.to_sparse_coo().coalesce().indices()  # sorted by query, then key
        return torch.stack([cols, rows])
    return edge_index


def graph_edges_first(pairs: Tensor, graph: Optional[Tensor], num_keys: int) -> Optional[Tensor]:
    """An order of ``pairs`` that lists the graph's edges first, in the graph's order, then the
    rest: what PyG's explainers assume (their mask and the attention they read cover the
    ``edge_index`` they passed, and layers append what they add)."""
    if graph is None:
        return None
    keys, graph_keys = edge_keys(pairs, num_keys), edge_keys(graph, num_keys)
    if not bool(sorted_isin(graph_keys, keys).all()) or torch.unique(graph_keys).numel() != graph_keys.numel():
        raise ValueError("explaining a pattern needs an edge_index without duplicate edges whose edges the pattern "
                         "attends (coalesce it first)")
    first = torch.searchsorted(keys, graph_keys)
    rest = torch.ones(pairs.size(1), dtype=torch.bool, device=pairs.device)
    rest[first] = False
    return torch.cat([first, rest.nonzero().squeeze(1)])


class Pairs(NamedTuple):
    """What one call attends: the backend, the batch layout and, where needed, the edge list."""

    backend: str
    band: Optional[Band]  # the pattern as a band (dense and window backends)
    ptr: Optional[Tensor]  # [B + 1] query layout (patterns only)
    key_ptr: Optional[Tensor]  # [B + 1] key layout
    edge_index: Optional[Tensor]  # [2, E] sorted by query, then key
    order: Optional[Tensor]  # [E] caller's edges -> sorted: edge_index = given[:, order]


def sorted_edges(edge_index: Tensor, num_keys: int) -> Pairs:
    """The caller's edges for the edges backend, sorted by query then key; ``order`` remembers
    the caller's order for the weights it gets back."""
    keys = edge_keys(edge_index, num_keys)
    order = None
    # Traced code sorts without looking: a sorted list comes back as it was.
    if not eager_only() or (edge_index.size(1) > 1 and bool((keys[1:] < keys[:-1]).any())):
        order = torch.sort(keys).indices
        edge_index = edge_index[:, order]
    return Pairs("edges", None, None, None, edge_index, order)


def pattern_layout(ptr, key_ptr, num_queries: int, num_keys: int, is_self: bool, device) -> tuple[Tensor, Tensor, int]:
    """``(ptr, key_ptr, max_len)`` of a pattern call: checked layouts (one example by default)
    and the longest example, which lets a band wider than every example run as dense. Traced
    code reads no ``ptr`` value for it (``max_len`` 0: no such shortcut)."""
    one_example = ptr is None and key_ptr is None
    ptr = check_ptr(torch.tensor([0, num_queries]) if ptr is None else ptr, "ptr", num_queries).to(device)
    if key_ptr is None:
        key_ptr = ptr if is_self else torch.tensor([0, num_keys], device=ptr.device)
    key_ptr = check_ptr(key_ptr, "key_ptr", num_keys).to(device)
    if key_ptr.numel() != ptr.numel():
        raise ValueError(f"key_ptr must describe as many examples as ptr ({ptr.numel() - 1}), got {key_ptr.numel() - 1}")
    if one_example:
        max_len = max(num_queries, num_keys)
    elif eager_only() and ptr.numel() > 1:
        max_len = int(torch.cat([ptr.diff(), key_ptr.diff()]).max())
    else:
        max_len = 0
    return ptr, key_ptr, max_len


def band_has_key(band: Band, ptr: Tensor, key_ptr: Tensor, num_queries: int) -> Tensor:
    """Whether each query of a band pattern has any key, ``[N_q]`` bool. Gathers instead of
    slices and fancy indexing, so that torch.export sees no guard on the number of examples."""
    batch = ptr_to_batch(ptr, check=False, num_nodes=num_queries)
    pos = torch.arange(num_queries, device=ptr.device) - ptr.index_select(0, batch)
    n_key = key_ptr.index_select(0, batch + 1) - key_ptr.index_select(0, batch)
    lo = torch.zeros_like(pos) if band.left is None else (pos - band.left).clamp(min=0)
    hi = n_key if band.right is None else torch.minimum(pos + band.right + 1, n_key)
    return hi > torch.minimum(lo, n_key)
