r"""Edge-wise multi-head attention on any pattern, without ``[E, heads, head_dim]`` tensors.

The scores of the allowed (query, key) pairs are a sampled dense-dense product (SDDMM) and the
aggregation is a sparse-dense product (SpMM), both on the CSR form of the pattern. torch has
both kernels (``torch.sparse.sampled_addmm``, CSR ``@`` dense) but autograd through torch.sparse
densifies its gradients, so two small ``autograd.Function``\ s give each a backward made of the
same two kernels. What autograd stores is then ``[E, heads]`` (scores and weights), never a
per-edge message of ``head_dim`` channels as a gather/scatter implementation does.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.index import index2ptr
from torch_geometric.utils import softmax

__all__ = ["NORMALIZATIONS", "CSRLayout", "SDDMM", "SpMM", "normalize", "edge_attention"]

NORMALIZATIONS = ("softmax", "relu", "sigmoid")


class CSRLayout(NamedTuple):
    """The CSR form of ``edge_index`` (sorted by query, then key) and of its transpose."""

    rowptr: Tensor  # [Nq + 1] CSR offsets over queries
    col: Tensor  # [E] key of each edge
    row: Tensor  # [E] query of each edge
    colptr: Tensor  # [Nk + 1] CSR offsets of the transpose (over keys)
    perm: Tensor  # [E] edge order of the transpose (sorted by key, then query)
    row_t: Tensor  # [E] row[perm]: the query of each edge of the transpose
    num_queries: int
    num_keys: int

    @staticmethod
    def build(edge_index: Tensor, num_queries: int, num_keys: int) -> "CSRLayout":
        src, dst = edge_index
        rowptr = index2ptr(dst, num_queries)
        perm = torch.sort(src * max(num_queries, 1) + dst).indices
        colptr = index2ptr(src[perm], num_keys)
        return CSRLayout(rowptr, src, dst, colptr, perm, dst[perm], num_queries, num_keys)

    def matrix(self, values: Tensor, transpose: bool = False) -> Tensor:
        """A CSR matrix ``[Nq, Nk]`` (or ``[Nk, Nq]``) with one value an edge; for the
        transpose, ``values`` must already be in the transpose's edge order (``values[perm]``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            if transpose:
                return torch.sparse_csr_tensor(self.colptr, self.row_t, values, (self.num_keys, self.num_queries))
            return torch.sparse_csr_tensor(
                self.rowptr, self.col, values, (self.num_queries, self.num_keys)
            )


def _spmm(layout: CSRLayout, values: Tensor, dense: Tensor, transpose: bool = False) -> Tensor:
    """Per head: ``A_h @ dense_h`` with ``A_h`` holding ``values[:, h]``. ``[E, H] x [M, H, D]``."""
    num_rows = layout.num_keys if transpose else layout.num_queries
    if values.numel() == 0 or dense.numel() == 0:
        return dense.new_zeros(num_rows, dense.size(1), dense.size(2))
    if transpose:  # one gather for all heads: random access over [E, H] is the costly part
        values = values[layout.perm]
    # Head-major copies made once: slicing a head out of [E, H] would read all of it per head,
    # which costs the most once E * H no longer fits in the cache.
    values, dense = values.t().contiguous(), dense.transpose(0, 1).contiguous()
    heads = [layout.matrix(values[h], transpose) @ dense[h] for h in range(dense.size(0))]
    return torch.stack(heads, dim=1)


def _sddmm(layout: CSRLayout, left: Tensor, right: Tensor) -> Tensor:
    """Per edge and head: ``<left[i, h], right[j, h]>`` for the edges (j, i): ``[E, H]``."""
    num_edges, heads = layout.col.numel(), left.size(1)
    if num_edges == 0 or left.size(-1) == 0:
        return left.new_zeros(num_edges, heads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pattern = torch.sparse_csr_tensor(
            layout.rowptr.expand(heads, -1).contiguous(),
            layout.col.expand(heads, -1).contiguous(),
            left.new_zeros(heads, num_edges),
            (heads, layout.num_queries, layout.num_keys),
        )
        out = torch.sparse.sampled_addmm(
            pattern, left.transpose(0, 1).contiguous(), right.permute(1, 2, 0).contiguous()
        )
    return out.values().t()  # [E, H]


class SDDMM(torch.autograd.Function):
    """scores[e, h] = <query[i_e, h], key[j_e, h]>."""

    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, layout: CSRLayout) -> Tensor:
        ctx.save_for_backward(query, key)
        ctx.layout = layout
        return _sddmm(layout, query, key)

    @staticmethod
    def backward(ctx, grad: Tensor):
        query, key = ctx.saved_tensors
        layout = ctx.layout
        grad = grad.contiguous()
        grad_query = _spmm(layout, grad, key) if ctx.needs_input_grad[0] else None
        grad_key = _spmm(layout, grad, query, transpose=True) if ctx.needs_input_grad[1] else None
        return grad_query, grad_key, None


class SpMM(torch.autograd.Function):
    """out[i, h] = sum over edges (j, i) of weight[e, h] * value[j, h]."""

    @staticmethod
    def forward(ctx, weight: Tensor, value: Tensor, layout: CSRLayout) -> Tensor:
        ctx.save_for_backward(weight, value)
        ctx.layout = layout
        return _spmm(layout, weight, value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, value = ctx.saved_tensors
        layout = ctx.layout
        grad = grad.contiguous()
        grad_weight = _sddmm(layout, grad, value) if ctx.needs_input_grad[0] else None
        grad_value = _spmm(layout, weight, grad, transpose=True) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_value, None


def normalize(scores: Tensor, layout: CSRLayout, normalization: str) -> Tensor:
    """Attention weights ``[E, H]`` from scores, over the incoming edges of each query."""
    if normalization == "softmax":
        return softmax(scores, layout.row, num_nodes=layout.num_queries)
    if normalization == "relu":
        num_keys = layout.rowptr.diff().clamp(min=1).to(scores.dtype)
        return F.relu(scores) / num_keys[layout.row].unsqueeze(-1)
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
    if layout is None:
        layout = CSRLayout.build(edge_index, num_queries, num_keys)
    if scale is None:
        scale = query.size(-1) ** -0.5
    scores = SDDMM.apply(query * scale, key, layout)  # [E, H]
    if bias is not None:
        scores = scores + bias
    weights = normalize(scores, layout, normalization)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = SpMM.apply(dropped, value, layout)  # [Nq, H, Dv]
    if edge_value is not None:
        # The value term is per edge by nature, so here an [E, H, Dv] tensor is unavoidable.
        out = out.index_add(0, layout.row, dropped.unsqueeze(-1) * edge_value)
    return out, weights if need_weights else None
