r"""Edge-wise multi-head attention on any pattern, without ``[E, heads, head_dim]`` tensors.

The scores of the allowed (query, key) pairs are a sampled dense-dense product (SDDMM) and the
aggregation is a sparse-dense product (SpMM), both on the CSR form of the pattern. torch has
both kernels (``torch.sparse.sampled_addmm``, CSR ``@`` dense) but autograd through torch.sparse
densifies its gradients, so two custom operators (``graphattn::edge_scores``,
``graphattn::edge_aggregate``) give each a backward made of the same two kernels, and let
``torch.compile`` and ``torch.export`` treat them as opaque operators of known output shape. What autograd stores is then ``[E, heads]`` (scores and weights), never a
per-edge message of ``head_dim`` channels as a gather/scatter implementation does.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import cumsum, degree, segment, softmax

from graphattn.utils.checks import eager_only

__all__ = ["NORMALIZATIONS", "CSRLayout", "edge_scores", "edge_aggregate", "edge_softmax", "normalize", "edge_attention",
           "keep_transpose", "gathers_messages"]

NORMALIZATIONS = ("softmax", "relu", "sigmoid")
#: edges below which a layout keeps its transpose's order for the backward pass (see keep_transpose)
TRANSPOSE_KEPT_BELOW = 1 << 22
#: per-edge messages (edges x heads x channels) up to which gathering beats the sparse kernels:
#: 6144 edges at 4 heads x 16 channels (measured crossover 6-7k edges; docs/edges_crossover.md)
GATHER_AT_MOST = 3 << 17


class CSRLayout(NamedTuple):
    """The CSR form of ``edge_index`` (sorted by query, then key) and of its transpose.

    Built with shape-static tensor ops only (a sort and two ``index2ptr``), so it traces under
    ``torch.compile`` and ``torch.export``; the kernels below take its tensors.
    """

    rowptr: Tensor  # [Nq + 1] CSR offsets over queries
    col: Tensor  # [E] key of each edge
    row: Tensor  # [E] query of each edge
    colptr: Tensor  # [Nk + 1] CSR offsets of the transpose (over keys)
    perm: Tensor  # [E] edge order of the transpose (sorted by key, then query), or [0]: sorted when needed
    row_t: Tensor  # [E] row[perm]: the query of each edge of the transpose, or [0] with perm

    @staticmethod
    def build(edge_index: Tensor, num_queries: int, num_keys: int, transpose: bool = False) -> "CSRLayout":
        """The layout of sorted ``edge_index``; with ``transpose`` also the transpose's order, which
        only backward passes need: without it each transposed product sorts for itself, and a
        forward pass keeps two ``[E]`` tensors fewer alive until its backward."""
        src, dst = edge_index
        rowptr = _offsets(dst, num_queries)
        colptr = cumsum(degree(src, num_keys, dtype=torch.long))
        perm = row_t = src.new_empty(0)
        if transpose:
            perm, row_t = _transpose_order(src, dst)
        return CSRLayout(rowptr, src, dst, colptr, perm, row_t)

    @property
    def num_queries(self) -> int:
        return self.rowptr.numel() - 1

    @property
    def num_keys(self) -> int:
        return self.colptr.numel() - 1


def keep_transpose(num_edges: int) -> bool:
    """Whether a layout keeps its transpose's order from the forward pass for the backward: below
    :data:`TRANSPOSE_KEPT_BELOW` edges, where its ``[E]`` tensors cost little memory and two sorts
    cost a tenth of a layer's time; above, each backward product sorts for itself."""
    return eager_only() and num_edges < TRANSPOSE_KEPT_BELOW


def gathers_messages(num_edges: int, heads: int, channels: int) -> bool:
    """Whether :func:`edge_attention` gathers per-edge messages (PyG's gather/scatter) instead of
    running the sparse kernels: in eager mode, for messages of at most :data:`GATHER_AT_MOST`
    elements (1.5 MB in fp32). Small batches of molecules spend most of a sparse call on building
    CSR tensors and looping over heads; past the crossover gathering's ``[E, H, D]`` messages cost
    more. Through a whole layer at 4 heads x 16 channels, one thread, a training step on the sparse
    path took 1.1-1.5x gathering's time at 2k-4k edges and about the same at 6-7k; from 8k edges on
    0.3-0.8x at degree 8, and about the same at degree 3 (``python benchmarks/edges_crossover.py``;
    docs/edges_crossover.md).
    Traced code always takes the kernels, so that a graph compiled or exported for dynamic sizes
    has no guard on them."""
    return eager_only() and num_edges * heads * channels <= GATHER_AT_MOST


def _transpose_order(col: Tensor, row: Tensor) -> tuple[Tensor, Tensor]:
    # A stable sort by key keeps the query order within each key: (key, query) order.
    perm = torch.sort(col, stable=True).indices
    return perm, row[perm]


def _offsets(sorted_index: Tensor, size: int) -> Tensor:
    """CSR offsets ``[size + 1]`` of a sorted index. A search rather than torch's COO-to-CSR
    conversion, whose shape function pins ``size`` to a constant under ``torch.export``."""
    return torch.searchsorted(sorted_index, torch.arange(size + 1, device=sorted_index.device))


def _csr(layout: CSRLayout, values: Tensor, transpose: bool, row_t: Optional[Tensor] = None) -> Tensor:
    """A CSR matrix ``[Nq, Nk]`` (or ``[Nk, Nq]``) with one value an edge; for the transpose,
    ``values`` must already be in the transpose's edge order (``values[perm]``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        if transpose:
            return torch.sparse_csr_tensor(layout.colptr, row_t, values, (layout.num_keys, layout.num_queries))
        return torch.sparse_csr_tensor(layout.rowptr, layout.col, values, (layout.num_queries, layout.num_keys))


def _spmm(layout: CSRLayout, values: Tensor, dense: Tensor, transpose: bool = False) -> Tensor:
    """Per head: ``A_h @ dense_h`` with ``A_h`` holding ``values[:, h]``. ``[E, H] x [M, H, D]``."""
    num_rows = layout.num_keys if transpose else layout.num_queries
    if values.numel() == 0 or dense.numel() == 0:
        return dense.new_zeros(num_rows, dense.size(1), dense.size(2))
    out = dense.new_empty(num_rows, dense.size(1), dense.size(2))  # every head is written below
    perm, row_t = layout.perm, layout.row_t
    if transpose and perm.numel() != layout.col.numel():
        perm, row_t = _transpose_order(layout.col, layout.row)
    # One head at a time, on contiguous copies of that head: transient memory of one head.
    for h in range(dense.size(1)):
        head_values = values[:, h].index_select(0, perm) if transpose else values[:, h].contiguous()
        out[:, h] = _csr(layout, head_values, transpose, row_t) @ dense[:, h].contiguous()
    return out


def _sddmm(layout: CSRLayout, left: Tensor, right: Tensor, scale: float = 1.0) -> Tensor:
    """Per edge and head: ``scale <left[i, h], right[j, h]>`` for the edges (j, i): ``[E, H]``."""
    num_edges, heads = layout.col.numel(), left.size(1)
    if num_edges == 0 or left.size(-1) == 0:
        return left.new_zeros(num_edges, heads)
    out = left.new_empty(num_edges, heads)  # every head is written below
    zeros = left.new_zeros(num_edges)
    # Head by head, not one batched sampled_addmm over [H, N, N] (which needs the CSR indices
    # copied once per head): at 1M edges, 4 heads x 16 channels, one thread, the batched call took
    # 0.96-2.3x the loop's time over runs, never clearly less; at 16k edges 0.6-0.8x, a fraction of
    # a millisecond in a 5-20 ms layer (benchmarks/edges_crossover.py, docs/edges_crossover.md).
    for h in range(heads):
        pattern = _csr(layout, zeros, False)
        product = torch.sparse.sampled_addmm(pattern, left[:, h].contiguous(), right[:, h].t(), alpha=scale)
        out[:, h] = product.values()
    return out


# The kernels are custom operators (torch.library) rather than autograd.Functions: their sparse
# CSR internals are opaque to torch.compile and torch.export, which only need the output shapes
# (register_fake) and the backward, itself made of the same operators. Each saves no more for
# its backward than its inputs (the softmax: its output).


@torch.library.custom_op("graphattn::edge_scores", mutates_args=())
def edge_scores(rowptr: Tensor, col: Tensor, row: Tensor, colptr: Tensor, perm: Tensor, row_t: Tensor,
                query: Tensor, key: Tensor, scale: float) -> Tensor:
    """SDDMM: ``scores[e, h] = scale <query[i_e, h], key[j_e, h]>`` for the edges ``(j_e, i_e)``: ``[E, H]``."""
    return _sddmm(CSRLayout(rowptr, col, row, colptr, perm, row_t), query, key, scale)


@edge_scores.register_fake
def _(rowptr, col, row, colptr, perm, row_t, query, key, scale):
    return query.new_empty(col.numel(), query.size(1))


@torch.library.custom_op("graphattn::edge_aggregate", mutates_args=())
def edge_aggregate(rowptr: Tensor, col: Tensor, row: Tensor, colptr: Tensor, perm: Tensor, row_t: Tensor,
                   weight: Tensor, value: Tensor, transpose: bool) -> Tensor:
    """SpMM: ``out[i, h] = sum_{e: i_e = i} weight[e, h] value[j_e, h]``: ``[N_q, H, D]``; with
    ``transpose`` the other way round, ``out[j] = sum_{e: j_e = j} weight[e] value[i_e]``: ``[N_k, H, D]``."""
    return _spmm(CSRLayout(rowptr, col, row, colptr, perm, row_t), weight, value, transpose)


@edge_aggregate.register_fake
def _(rowptr, col, row, colptr, perm, row_t, weight, value, transpose):
    num_rows = (colptr if transpose else rowptr).numel() - 1
    return value.new_empty(num_rows, value.size(1), value.size(2))


@torch.library.custom_op("graphattn::edge_softmax", mutates_args=())
def edge_softmax(rowptr: Tensor, row: Tensor, scores: Tensor) -> Tensor:
    """Softmax of ``scores [E, H]`` over the edges of each query (edges sorted by query)."""
    if scores.numel() == 0:
        return scores.clone()
    top = segment(scores, rowptr, reduce="max").index_select(0, row)
    weights = scores.sub(top).exp_()
    del top  # [E, H]: free it before the next one
    return weights.div_(segment(weights, rowptr, reduce="sum").index_select(0, row))


@edge_softmax.register_fake
def _(rowptr, row, scores):
    return torch.empty_like(scores)


def _save_csr(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:8])
    ctx.last = inputs[8]  # scale of edge_scores, transpose of edge_aggregate


def _edge_scores_backward(ctx, grad):
    *csr, query, key = ctx.saved_tensors
    grad = grad.contiguous() * ctx.last
    grad_query = edge_aggregate(*csr, grad, key, False) if ctx.needs_input_grad[6] else None
    grad_key = edge_aggregate(*csr, grad, query, True) if ctx.needs_input_grad[7] else None
    return None, None, None, None, None, None, grad_query, grad_key, None


def _edge_aggregate_backward(ctx, grad):
    *csr, weight, value = ctx.saved_tensors
    transpose = ctx.last
    grad = grad.contiguous()
    grad_weight = grad_value = None
    if ctx.needs_input_grad[6]:  # <grad[i_e], value[j_e]>, or with the roles of i and j swapped
        grad_weight = edge_scores(*csr, value, grad, 1.0) if transpose else edge_scores(*csr, grad, value, 1.0)
    if ctx.needs_input_grad[7]:
        grad_value = edge_aggregate(*csr, weight, grad, not transpose)
    return None, None, None, None, None, None, grad_weight, grad_value, None


def _save_softmax(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], inputs[1], output)


def _edge_softmax_backward(ctx, grad):
    rowptr, row, weights = ctx.saved_tensors
    weighted = weights * grad
    return None, None, weighted - weights * segment(weighted, rowptr, reduce="sum").index_select(0, row)


edge_scores.register_autograd(_edge_scores_backward, setup_context=_save_csr)
edge_aggregate.register_autograd(_edge_aggregate_backward, setup_context=_save_csr)
edge_softmax.register_autograd(_edge_softmax_backward, setup_context=_save_softmax)


def normalize(scores: Tensor, index: Tensor, num_queries: int, normalization: str) -> Tensor:
    """Attention weights ``[E, H]`` from scores ``[E, H]`` over the incoming edges of each query
    (``index [E]``: the query of each edge, in any order)."""
    if normalization == "softmax":
        return softmax(scores, index, num_nodes=num_queries)
    if normalization == "relu":
        num_keys = degree(index, num_queries, dtype=scores.dtype).clamp(min=1)
        return F.relu(scores) / num_keys[index].unsqueeze(-1)
    if normalization == "sigmoid":
        return torch.sigmoid(scores)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def edge_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    edge_index: Tensor,
    scale: Optional[float] = None,
    bias: Optional[Tensor] = None,
    edge_value: Optional[Tensor] = None,
    normalization: str = "softmax",
    dropout_p: float = 0.0,
    need_weights: bool = False,
    layout: Optional[CSRLayout] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    r"""Multi-head attention along the edges of any graph.

    .. math::
        s_{ij} = \text{scale} \cdot \langle q_i, k_j \rangle + b_{ij}, \qquad
        a_{ij} = \operatorname{softmax}_{j \to i}(s_{ij}), \qquad
        o_i = \sum_{j \to i} a_{ij} (v_j + e_{ij})

    Args:
        query, key, value (Tensor): ``[Nq, H, D]``, ``[Nk, H, D]``, ``[Nk, H, Dv]``.
        edge_index (LongTensor): ``[2, E]``, row 0 key ``j``, row 1 query ``i``, sorted by
            query then key (as every pattern returns it).
        scale (float, optional): score scale (default: ``1 / sqrt(D)``).
        bias (Tensor, optional): additive score bias ``[E, H]``.
        edge_value (Tensor, optional): per-edge value term ``e_ij``, ``[E, H, Dv]``.
        normalization (str): ``"softmax"``, ``"relu"`` (``relu(s) / number of keys``) or
            ``"sigmoid"``.
        dropout_p (float): dropout on the weights (pass 0 in evaluation, as to SDPA).
        need_weights (bool): also return the weights (before dropout).
        layout (CSRLayout, optional): a precomputed CSR layout of ``edge_index``.

    Returns:
        ``(out [Nq, H, Dv], weights [E, H] or None)``; a query without keys outputs zeros.
    """
    dtype = query.dtype
    if dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(query.device.type):
        # The sparse kernels have no half-precision CPU versions, and a softmax over thousands of
        # edges is better summed in fp32 anyway, as autocast does for its own reductions.
        with torch.autocast(query.device.type, enabled=False):
            out, weights = edge_attention(
                query.float(), key.float(), value.float(), edge_index, scale,
                None if bias is None else bias.float(), None if edge_value is None else edge_value.float(),
                normalization, dropout_p, need_weights, layout)
        return out.to(dtype), None if weights is None else weights.to(dtype)
    num_queries, num_keys = query.size(0), key.size(0)
    num_edges, heads = edge_index.size(1), query.size(1)
    gather = gathers_messages(num_edges, heads, max(query.size(2), value.size(2)))
    if layout is None:
        layout = CSRLayout.build(edge_index, num_queries, num_keys, transpose=keep_transpose(num_edges) and not gather)
    if scale is None:
        scale = query.size(-1) ** -0.5
    if gather:
        out, weights = _gathered_attention(query, key, value, layout, float(scale), bias, edge_value, normalization,
                                           dropout_p)
        return out, weights if need_weights else None
    scores = edge_scores(*layout, query, key, float(scale))  # [E, H]
    if bias is not None:
        scores = scores + bias
    if normalization == "softmax":
        weights = edge_softmax(layout.rowptr, layout.row, scores)
    else:
        weights = normalize(scores, layout.row, layout.num_queries, normalization)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = edge_aggregate(*layout, dropped, value, False)  # [Nq, H, Dv]
    if edge_value is not None:
        # The value term is per edge by nature, so here an [E, H, Dv] tensor is unavoidable.
        out = out.index_add(0, layout.row, dropped.unsqueeze(-1) * edge_value)
    return out, weights if need_weights else None


def _gathered_attention(query: Tensor, key: Tensor, value: Tensor, layout: CSRLayout, scale: float,
                        bias: Optional[Tensor], edge_value: Optional[Tensor], normalization: str,
                        dropout_p: float) -> tuple[Tensor, Tensor]:
    """:func:`edge_attention` by gathering ``[E, H, D]`` messages and scattering them back, as
    PyG's attention convolutions do: ``(out [Nq, H, Dv], weights [E, H])``."""
    src, dst = layout.col, layout.row
    scores = (query.index_select(0, dst) * key.index_select(0, src)).sum(-1) * scale  # [E, H]
    if bias is not None:
        scores = scores + bias
    weights = normalize(scores, dst, layout.num_queries, normalization)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    messages = value.index_select(0, src)
    if edge_value is not None:
        messages = messages + edge_value
    out = value.new_zeros(layout.num_queries, value.size(1), value.size(2))
    return out.index_add_(0, dst, messages * dropped.unsqueeze(-1)), weights
