r"""What one call of :class:`~graphattn.nn.GraphMultiheadAttention` is given: its node inputs,
checked, and the pairs it attends, from how the caller gave them: an ``edge_index``
(LongTensor, ``EdgeIndex`` or torch sparse adjacency), a pattern on a layout ``ptr``, or a graph
pattern on a graph, and the backend that computes them. Pure functions of their arguments.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor
from torch_geometric import EdgeIndex

from graphattn.patterns import Band, Pattern
from graphattn.utils.batch import ptr_to_batch
from graphattn.utils.checks import check_dtype, check_ptr, eager_only
from graphattn.utils.edges import edge_keys, sorted_isin

__all__ = ["Pairs", "as_band", "as_edge_index", "graph_edges_first", "sorted_edges", "pattern_layout", "band_has_key",
           "check_node_inputs", "check_key_value", "check_edge_terms", "choose_backend"]


def as_band(pattern: Optional[Pattern]) -> Optional[Band]:
    """The band a pattern is (cross-attention wraps one), or None."""
    return None if pattern is None else pattern.as_band()


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


def check_node_inputs(x, value, embed_dim: int, kdim: int, vdim: int,
                      dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_key [N_k, kdim], x_query [N_q, embed_dim], value [N_k, vdim])`` of ``x`` (a tensor, or a
    pair ``(x_key, x_query)``) and ``value`` (default: the key inputs), checked (with ``dtype``:
    the layer's, which each must have outside autocast)."""
    if isinstance(x, Tensor):
        x_key = x_query = x
    elif isinstance(x, (tuple, list)) and len(x) == 2:
        x_key, x_query = x
    else:
        raise TypeError("x must be a Tensor [N, embed_dim] or a pair (x_key, x_query)")
    value = x_key if value is None else value
    for name, t, dim in (("x_query", x_query, embed_dim), ("x_key", x_key, kdim), ("value", value, vdim)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating point tensor, got dtype {t.dtype}")
        if t.dim() != 2 or t.size(1) != dim:
            raise ValueError(f"{name} must have shape [N, {dim}], got {tuple(t.shape)}")
        if dtype is not None:
            check_dtype("x" if name == "x_query" and x_key is x_query else name, t, dtype)
    if value.size(0) != x_key.size(0):
        raise ValueError(f"value must have one row per key ({x_key.size(0)}), got {value.size(0)}")
    return x_key, x_query, value


def check_key_value(x, key_value, embed_dim: int, num_heads: int, head_dim: int,
                    dtype: Optional[torch.dtype] = None) -> None:
    """Check the query input ``x [N_q, embed_dim]`` and projected ``(keys, values)``, ``[N_k, H, D]``
    each (with ``dtype``: the layer's, outside autocast)."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != embed_dim:
        raise ValueError(f"with key_value, x must be the query input [N, {embed_dim}], got {getattr(x, 'shape', type(x))}")
    if not isinstance(key_value, (tuple, list)) or len(key_value) != 2:
        raise TypeError("key_value must be a pair (keys, values) from project_key_value")
    for name, t in zip(("keys", "values"), key_value):
        if not isinstance(t, Tensor) or t.dim() != 3 or tuple(t.shape[1:]) != (num_heads, head_dim):
            raise ValueError(f"key_value {name} must have shape [N_k, {num_heads}, {head_dim}], "
                             f"got {getattr(t, 'shape', type(t))}")
    if key_value[0].size(0) != key_value[1].size(0):
        raise ValueError(f"key_value keys ({key_value[0].size(0)}) and values ({key_value[1].size(0)}) "
                         "must have the same rows")
    if dtype is not None:
        for name, t in (("x", x), ("key_value keys", key_value[0]), ("key_value values", key_value[1])):
            check_dtype(name, t, dtype)


def check_edge_terms(edge_attr, attn_bias, num_edges: Optional[int], edge_dim: Optional[int], num_heads: int,
                     dtype: torch.dtype) -> None:
    """Check ``edge_attr [E, edge_dim]`` and ``attn_bias [E, num_heads]``: one row per attended
    pair, and the layer's ``dtype`` (outside autocast)."""
    if edge_attr is not None:
        if not isinstance(edge_attr, Tensor) or edge_attr.dim() != 2 or edge_attr.size(1) != edge_dim:
            raise ValueError(f"edge_attr must have shape [E, {edge_dim}], got {tuple(getattr(edge_attr, 'shape', ()))}")
        if edge_attr.size(0) != num_edges:
            raise ValueError(f"edge_attr must have one row per attended pair ({num_edges}), got {edge_attr.size(0)}")
        check_dtype("edge_attr", edge_attr, dtype)
    if attn_bias is not None:
        if not isinstance(attn_bias, Tensor) or tuple(attn_bias.shape) != (num_edges, num_heads):
            raise ValueError(f"attn_bias must have shape [E, num_heads] = [{num_edges}, {num_heads}], "
                             f"got {tuple(getattr(attn_bias, 'shape', ()))}")
        check_dtype("attn_bias", attn_bias, dtype)


def choose_backend(backend: str, normalization: str, pattern: Optional[Pattern], max_len: int, needs_edges: bool,
                   device: torch.device, flex_cannot: Callable[[], str]) -> tuple[str, str]:
    """``(backend, reason)`` of :meth:`GraphMultiheadAttention.select_backend` for a layer configured
    with ``backend`` and ``normalization``; ``flex_cannot()`` says why FlexAttention cannot run on
    ``device`` ("" when it can), asked only where it matters."""
    band = as_band(pattern)
    restricted = normalization != "softmax" or needs_edges
    window_ok = not restricted and band is not None and band.left is not None and band.right is not None
    clipped = band.clipped(max_len) if band is not None and max_len else band
    dense_ok = not restricted and clipped is not None and clipped.left is None and clipped.right in (None, 0)
    if normalization != "softmax":
        why = f"normalization={normalization!r} runs on the edges backend only"
    elif needs_edges:
        why = "edge value terms (edge_value=True) run on the edges backend only"
    elif pattern is None:
        why = "an explicit edge_index has no structure to exploit"
    elif band is None:
        why = f"{pattern!r} is not a band (dense, causal or window)"
    else:
        why = ""
    no_flex = why if restricted or pattern is None else flex_cannot()
    if backend == "auto":
        if dense_ok:
            return "dense", ""
        if device.type != "cuda":  # on CPU FlexAttention is a forward-only reference path
            return ("window", "") if window_ok else ("edges", why)
        if not no_flex and pattern.position_based:
            return "flex", ""
        # Graph edges scatter over FlexAttention's 128 x 128 tiles (to be confirmed on a GPU).
        why_not_flex = no_flex or f"{pattern!r} is a graph pattern, whose edges fill few 128 x 128 tiles"
        return ("window" if window_ok else "edges"), why_not_flex
    if pattern is None and backend != "edges":
        raise ValueError(f"backend {backend!r} computes a pattern (pattern= with ptr), not an explicit "
                         "edge_index: give the pattern, or use backend='edges' or 'auto' for a list of edges")
    if backend == "dense" and not dense_ok:
        raise ValueError(f"backend 'dense' cannot compute {pattern!r}: {why or 'it is not dense or causal'}")
    if backend == "window" and not window_ok:
        raise ValueError(f"backend 'window' cannot compute {pattern!r}: {why or 'it is not a finite band'}")
    if backend == "flex" and no_flex:
        raise ValueError(f"backend 'flex' cannot compute {pattern!r}: {no_flex}")
    return backend, why
