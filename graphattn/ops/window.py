r"""Banded ("sliding chunks") attention: multi-head attention restricted to a band of positions.

The window backend of :class:`~graphattn.nn.GraphMultiheadAttention`. For the pattern ``Band(left, right)``
(query ``t`` reads keys ``t - left .. t + right`` of its example) it computes what the dense
masked computation does, in time and memory proportional to ``n * (left + right + block_size)``.

Every example's queries are cut into blocks of ``c`` rows; the blocks of all examples form one
flat sequence (a ragged batch pads each example to a multiple of ``c``, never to the longest
example). Block ``j`` reads one contiguous window of ``win <= c + left + right`` keys of its
example starting at ``j * c - left``, so one batched matmul gives its scores ``(H, c, win)``,
and a boolean band mask (True = may attend) removes the pairs outside the band or the example.

A custom operator runs this over groups of blocks (about a million scores each) and its
backward, a second operator, recomputes each group's scores instead of keeping them, as
FlashAttention does.
Plain autograd through the same ops kept about eight score-sized tensors per call plus copies
of q, k and v; on CPU the page faults of those fresh allocations alone made long sequences
scale worse than linearly. Kept for backward: the inputs and, with dropout, the seed of the keep
mask, which the backward draws again.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from graphattn.utils.checks import check_int, check_ptr, eager_only

__all__ = ["window_attention"]

# Scores per group of blocks: small enough that the allocator reuses the memory between groups
# and calls (no fresh page faults on CPU), large enough for efficient GEMMs.
_GROUP_ELEMENTS = {"cpu": 2**20}
_GROUP_ELEMENTS_DEFAULT = 2**24


class _Plan(NamedTuple):
    """Index tensors of the block layout: ``nb`` blocks of ``c`` rows, windows of ``win`` keys."""

    blocked: Tensor  # [nb, c, win] bool, True = -inf (outside band/example; all False if no key)
    row_query: Tensor  # [nb * c] query read by each padded row (any valid one for padding)
    query_row: Tensor  # [Nq] padded row of each query
    query_has_key: Tensor  # [Nq] bool
    key_idx: Tensor  # [nb, win] key read by each window slot (clamped for slots outside)
    edges: Optional[Tensor]  # [E] flat positions of the band edges in [nb, c, win]
    groups: list  # (block lo, block hi, query lo, query hi, edge lo, edge hi) per group


def _plan(ptr, key_ptr, num_k, left, right, c, win, heads, need_edges) -> _Plan:
    device = ptr.device
    n_q, n_k = ptr.diff(), key_ptr.diff()  # [B]
    num_blocks = (n_q + c - 1) // c  # [B]
    first_block = num_blocks.cumsum(0) - num_blocks
    nb = int(num_blocks.sum())
    examples = torch.arange(n_q.numel(), device=device)
    blk_b = torch.repeat_interleave(examples, num_blocks, output_size=nb)  # [nb] example
    blk_j = torch.arange(nb, device=device) - first_block[blk_b]  # [nb] block in its example
    start = (blk_j * c - left).clamp(min=0)  # [nb] first key position of the window
    # Key u minus query r of block j is (u - r) + (start - j c): compare a small [c, win] table
    # with per-block bounds rather than build an int64 [nb, c, win].
    rel = torch.arange(win, device=device) - torch.arange(c, device=device).unsqueeze(1)
    shift = (start - blk_j * c).view(-1, 1, 1)
    mask = (rel >= -left - shift) & (rel <= right - shift)  # [nb, c, win], True = may attend
    t = blk_j.unsqueeze(1) * c + torch.arange(c, device=device)  # [nb, c] query position
    s = start.unsqueeze(1) + torch.arange(win, device=device)  # [nb, win] key position
    mask &= (t < n_q[blk_b].unsqueeze(1)).unsqueeze(2)
    mask &= (s < n_k[blk_b].unsqueeze(1)).unsqueeze(1)
    key_idx = (key_ptr[blk_b].unsqueeze(1) + s).clamp_(max=max(num_k - 1, 0))
    has_key = mask.any(-1)  # [nb, c]
    # Rows without any key (padding, or queries past the key example) attend their whole
    # window so softmax stays NaN-free; their output is zeroed, and so are their gradients.
    blocked = ~(mask | ~has_key.unsqueeze(-1))

    num_q = int(ptr[-1])
    q_b = torch.repeat_interleave(examples, n_q, output_size=num_q)
    query_row = first_block[q_b] * c + torch.arange(num_q, device=device) - ptr[q_b]  # [Nq]
    row_query = torch.zeros(nb * c, dtype=torch.long, device=device)
    row_query[query_row] = torch.arange(num_q, device=device)
    edges = mask.view(-1).nonzero().squeeze(1) if need_edges else None

    # Queries and edges are sorted like the blocks: each group owns one range of both.
    size = max(1, _GROUP_ELEMENTS.get(device.type, _GROUP_ELEMENTS_DEFAULT) // (heads * c * win))
    blocks = list(range(0, nb, size)) + [nb]
    bounds = torch.tensor(blocks, device=device)
    queries = torch.searchsorted(query_row, bounds * c).tolist()
    edge_at = [0] * len(blocks)
    if edges is not None:
        edge_at = torch.searchsorted(edges, bounds * c * win).tolist()
    groups = [
        (*blocks[g : g + 2], *queries[g : g + 2], *edge_at[g : g + 2])
        for g in range(len(blocks) - 1)
    ]
    return _Plan(blocked, row_query, query_row, has_key.view(-1)[query_row], key_idx, edges, groups)


def _gather(x: Tensor, idx: Tensor, rows: int) -> Tensor:
    """Rows ``idx`` of ``x [N, H, D]`` as ``(H, len(idx) // rows, rows, D)``, contiguous."""
    x = x.index_select(0, idx).view(-1, rows, x.size(1), x.size(2))  # (g, rows, H, D)
    return x.permute(2, 0, 1, 3).contiguous()


def _to_rows(x: Tensor) -> Tensor:
    """``(H, g, r, D)`` to rows ``(g * r, H, D)``, contiguous (index_add_ is slow on strided)."""
    return x.permute(1, 2, 0, 3).contiguous().view(-1, x.size(0), x.size(3))


def _probs(query, key, bias, plan, scale, group):
    """Scaled queries ``(H, g, c, D)``, keys ``(H, g, win, D)``, softmax ``(H, g, c, win)``."""
    lo, hi, _, _, e_lo, e_hi = group
    c, win = plan.blocked.shape[1:]
    q = _gather(query, plan.row_query[lo * c : hi * c], c).mul_(scale)
    k = _gather(key, plan.key_idx[lo:hi].reshape(-1), win)
    scores = torch.matmul(q, k.transpose(-1, -2))
    if bias is not None:
        local = plan.edges[e_lo:e_hi] - lo * c * win
        scores.view(scores.size(0), -1)[:, local] += bias[e_lo:e_hi].t()
    scores.masked_fill_(plan.blocked[lo:hi], float("-inf"))
    return q, k, torch.softmax(scores, dim=-1)


def _forward(query, key, value, bias, plan: _Plan, scale: float, keep: Optional[Tensor], dropout_p: float,
             need_weights: bool) -> tuple[Tensor, Tensor]:
    """Group by group: out = dropout(softmax(q k^T + bias)) v; alpha = softmax at the edges."""
    heads, dim_v = value.shape[1:]
    c, win = plan.blocked.shape[1:]
    out = value.new_zeros(query.size(0), heads, dim_v)
    alpha = value.new_empty(plan.edges.numel() if need_weights else 0, heads)
    for group in plan.groups:
        lo, hi, q_lo, q_hi, e_lo, e_hi = group
        p = _probs(query, key, bias, plan, scale, group)[2]
        if need_weights:
            alpha[e_lo:e_hi] = p.view(heads, -1)[:, plan.edges[e_lo:e_hi] - lo * c * win].t()
        if keep is not None:
            p = p * keep[:, lo:hi] * _keep_scale(dropout_p)
        v = _gather(value, plan.key_idx[lo:hi].reshape(-1), win)
        rows = _to_rows(torch.matmul(p, v))  # (g * c, H, Dv)
        out[q_lo:q_hi] = rows.index_select(0, plan.query_row[q_lo:q_hi] - lo * c)
    out.masked_fill_(~plan.query_has_key.view(-1, 1, 1), 0.0)
    return out, alpha


def _backward(grad_out, grad_alpha, query, key, value, bias, plan: _Plan, scale: float, keep: Optional[Tensor],
              dropout_p: float):
    """Gradients of :func:`_forward`, recomputing each group's probabilities instead of keeping them."""
    heads, dim_v = value.shape[1:]
    c, win = plan.blocked.shape[1:]
    grad_q, grad_k, grad_v = (torch.zeros_like(x) for x in (query, key, value))
    grad_bias = None if bias is None else torch.zeros_like(bias)
    for group in plan.groups:
        lo, hi, q_lo, q_hi, e_lo, e_hi = group
        idx = plan.key_idx[lo:hi].reshape(-1)
        q, k, p = _probs(query, key, bias, plan, scale, group)
        d_out = value.new_zeros((hi - lo) * c, heads, dim_v)
        if grad_out is not None:  # queries without keys output a constant zero
            has_key = plan.query_has_key[q_lo:q_hi].view(-1, 1, 1)
            d_out[plan.query_row[q_lo:q_hi] - lo * c] = grad_out[q_lo:q_hi] * has_key
        d_out = d_out.view(hi - lo, c, heads, dim_v).permute(2, 0, 1, 3)  # (H, g, c, Dv)
        p_used = p if keep is None else p * keep[:, lo:hi] * _keep_scale(dropout_p)
        grad_v.index_add_(0, idx, _to_rows(torch.matmul(p_used.transpose(-1, -2), d_out)))
        d_p = torch.matmul(d_out, _gather(value, idx, win).transpose(-1, -2))  # (H, g, c, win)
        if keep is not None:
            d_p *= keep[:, lo:hi] * _keep_scale(dropout_p)
        local = None if plan.edges is None else plan.edges[e_lo:e_hi] - lo * c * win
        if grad_alpha is not None:
            d_p.view(heads, -1)[:, local] += grad_alpha[e_lo:e_hi].t()
        d_s = p * (d_p - (p * d_p).sum(-1, keepdim=True))  # softmax backward
        if grad_bias is not None:
            grad_bias[e_lo:e_hi] = d_s.view(heads, -1)[:, local].t()
        d_q = _to_rows(torch.matmul(d_s, k)).mul_(scale)  # (g * c, H, D)
        grad_q[q_lo:q_hi] = d_q.index_select(0, plan.query_row[q_lo:q_hi] - lo * c)
        grad_k.index_add_(0, idx, _to_rows(torch.matmul(d_s.transpose(-1, -2), q)))
    return grad_q, grad_k, grad_v, grad_bias


def _setup(query, key, value, ptr, key_ptr, left, right, block_size, need_edges, dropout_p, seed):
    """The plan, the key/value padded for an empty key set, and the dropout keep mask of a call."""
    heads = query.size(1)
    num_q, num_k = query.size(0), key.size(0)
    max_q = int(ptr.diff().max()) if num_q else 0
    max_k = int(key_ptr.diff().max()) if num_k else 0
    c = max(1, min(block_size, max_q))  # longer blocks than examples would only be padding
    win = max(1, min(c + left + right, max_k))  # no window needs more keys than an example has
    plan = _plan(ptr, key_ptr, num_k, left, right, c, win, heads, need_edges)
    if num_k == 0:  # one fully masked key keeps every gather in bounds
        key = torch.cat([key, key.new_zeros(1, heads, key.size(2))])
        value = torch.cat([value, value.new_zeros(1, heads, value.size(2))])
    keep = None
    if dropout_p > 0.0:
        # The same seed gives the same mask in the backward's recomputation.
        gen = torch.Generator(device=query.device).manual_seed(int(seed))
        keep = torch.rand((heads, *plan.blocked.shape), generator=gen, device=query.device) >= dropout_p
    return plan, key, value, keep


# The kernel is a pair of custom operators (torch.library): its plan has data-dependent sizes and
# Python loops that torch.compile and torch.export need not see; they get the output shapes
# (register_fake) and a backward that is the second operator.


@torch.library.custom_op("graphattn::window_forward", mutates_args=())
def window_forward(query: Tensor, key: Tensor, value: Tensor, bias: Optional[Tensor], ptr: Tensor, key_ptr: Tensor,
                   left: int, right: int, scale: float, dropout_p: float, seed: Tensor, block_size: int,
                   need_weights: bool, num_edges: int) -> tuple[Tensor, Tensor]:
    """``(out [N_q, H, D_v], weights [E, H] or [0, H])`` of :func:`window_attention`."""
    plan, key_, value_, keep = _setup(query, key, value, ptr, key_ptr, left, right, block_size,
                                      bias is not None or need_weights, dropout_p, seed)
    if bias is not None and bias.shape != (plan.edges.numel(), query.size(1)):
        raise ValueError(f"bias must have shape [E, H] = [{plan.edges.numel()}, {query.size(1)}] (one row per edge "
                         f"of Band({left}, {right}).edge_index(ptr, key_ptr)), got {tuple(bias.shape)}")
    return _forward(query, key_, value_, bias, plan, scale, keep, dropout_p, need_weights)


@window_forward.register_fake
def _(query, key, value, bias, ptr, key_ptr, left, right, scale, dropout_p, seed, block_size, need_weights, num_edges):
    rows = num_edges if need_weights else 0
    return query.new_empty(query.size(0), query.size(1), value.size(2)), query.new_empty(rows, query.size(1))


@torch.library.custom_op("graphattn::window_backward", mutates_args=())
def window_backward(grad_out: Optional[Tensor], grad_weights: Optional[Tensor], query: Tensor, key: Tensor,
                    value: Tensor, bias: Optional[Tensor], ptr: Tensor, key_ptr: Tensor, left: int, right: int,
                    scale: float, dropout_p: float, seed: Tensor,
                    block_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(query, key, value, bias or [0, H])`` of :func:`window_forward`."""
    need_edges = bias is not None or grad_weights is not None
    plan, key_, value_, keep = _setup(query, key, value, ptr, key_ptr, left, right, block_size, need_edges,
                                      dropout_p, seed)
    grad_q, grad_k, grad_v, grad_bias = _backward(grad_out, grad_weights, query, key_, value_, bias, plan, scale,
                                                  keep, dropout_p)
    grad_k, grad_v = grad_k[:key.size(0)], grad_v[:value.size(0)]  # drop the padding key, if any
    return grad_q, grad_k.contiguous(), grad_v.contiguous(), query.new_zeros(0, query.size(1)) if grad_bias is None else grad_bias


@window_backward.register_fake
def _(grad_out, grad_weights, query, key, value, bias, ptr, key_ptr, left, right, scale, dropout_p, seed, block_size):
    grad_bias = query.new_empty(0, query.size(1)) if bias is None else torch.empty_like(bias)
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), grad_bias


def _window_setup_context(ctx, inputs, output) -> None:
    query, key, value, bias, ptr, key_ptr, left, right, scale, dropout_p, seed, block_size, need_weights, _ = inputs
    ctx.save_for_backward(query, key, value, bias, ptr, key_ptr, seed)
    ctx.args = (left, right, scale, dropout_p, block_size)
    ctx.need_weights = need_weights


def _window_autograd(ctx, grad_out, grad_weights):
    query, key, value, bias, ptr, key_ptr, seed = ctx.saved_tensors
    left, right, scale, dropout_p, block_size = ctx.args
    grads = window_backward(grad_out, grad_weights if ctx.need_weights else None, query, key, value, bias, ptr,
                            key_ptr, left, right, scale, dropout_p, seed, block_size)
    grad_q, grad_k, grad_v, grad_bias = grads
    return (grad_q, grad_k, grad_v, grad_bias if bias is not None else None,
            None, None, None, None, None, None, None, None, None, None)


window_forward.register_autograd(_window_autograd, setup_context=_window_setup_context)


def _keep_scale(dropout_p: float) -> float:
    return 0.0 if dropout_p >= 1.0 else 1.0 / (1.0 - dropout_p)


def _check_inputs(query, key, value) -> None:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a Tensor [N, H, D], got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
        if x.dim() != 3:
            raise ValueError(f"{name} must have shape [N, H, D] (3-D), got {tuple(x.shape)}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            "query, key and value must share one dtype, got "
            f"{query.dtype}, {key.dtype} and {value.dtype}"
        )
    if not query.device == key.device == value.device:
        raise ValueError(
            "query, key and value must be on one device, got "
            f"{query.device}, {key.device} and {value.device}"
        )
    if not query.size(1) == key.size(1) == value.size(1):
        raise ValueError(
            f"query, key and value must have the same number of heads (dim 1), got "
            f"{query.size(1)}, {key.size(1)} and {value.size(1)}"
        )
    if key.size(2) != query.size(2):
        raise ValueError(
            f"key must have the head dim of query ({query.size(2)}), got {key.size(2)}"
        )
    if value.size(0) != key.size(0):
        raise ValueError(f"value must have one row per key ({key.size(0)}), got {value.size(0)}")


def _check_layout(ptr, num_rows: int, name: str, rows: str, device) -> Tensor:
    ptr = check_ptr(ptr, name).to(device)
    if eager_only() and int(ptr[-1]) != num_rows:
        raise ValueError(f"{name}[-1] ({int(ptr[-1])}) must equal the number of {rows} ({num_rows})")
    return ptr


def window_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    ptr: Tensor,
    key_ptr: Tensor,
    left: int,
    right: int,
    scale: Optional[float] = None,
    bias: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    block_size: Optional[int] = None,
    num_edges: Optional[int] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    r"""Multi-head attention where local query :math:`t` attends the local keys
    :math:`t - \text{left} \le s \le t + \text{right}` of its own example.

    .. math::
        s_{ij} = \text{scale} \cdot \langle q_i, k_j \rangle + b_{ij}, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} s_{ij}, \qquad
        o_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij} v_j

    per head, where :math:`\mathcal{N}(i)` are the keys :math:`j` of the edges
    ``Band(left, right).edge_index(ptr, key_ptr)`` into :math:`i` (key positions clipped to the
    key example). A query without keys (empty key example, or cross-attention with
    ``t - left >= n_key``) outputs zeros and receives zero gradients, never NaN.

    Args:
        query (Tensor): projected queries, not yet scaled.
        key (Tensor): projected keys.
        value (Tensor): projected values.
        ptr (LongTensor): query layout; example ``b`` owns query rows ``ptr[b]:ptr[b + 1]``.
        key_ptr (LongTensor): key layout (``ptr`` itself for self-attention).
        left (int): how many positions before the query a key may be.
        right (int): how many positions after the query a key may be.
        scale (float, optional): score scale. (default: ``1 / sqrt(D)``)
        bias (Tensor, optional): additive score bias, one row per edge of
            ``Band(left, right).edge_index(ptr, key_ptr)`` in that order (by query, then key).
            (default: :obj:`None`)
        dropout_p (float, optional): dropout probability on the attention weights (pass 0 in
            evaluation, as to SDPA). (default: :obj:`0.0`)
        need_weights (bool, optional): also return the attention weights :math:`\alpha`, before
            dropout (as PyG's attention layers do). (default: :obj:`False`)
        block_size (int, optional): query rows per block, a speed knob that does not change the
            result. (default: ``max(left, right)`` clamped to ``[16, 128]``)
        num_edges (int, optional): the band's number of edges, when the caller knows it (the
            weights' rows); traced code (torch.compile, torch.export) needs it with
            ``need_weights``, since counting reads tensor values. (default: counted)

    Shapes:
        - **input:** query :math:`(N_q, H, D)`, key :math:`(N_k, H, D)`,
          value :math:`(N_k, H, D_v)`, ptr :math:`(B + 1)`, key_ptr :math:`(B + 1)`,
          bias :math:`(E, H)`
        - **output:** ``(out, weights)``: :math:`(N_q, H, D_v)` and the attention weights
          :math:`(E, H)` if ``need_weights``, else :obj:`None`

    Supports first-order gradients (the backward operator has no backward of its own).
    """
    _check_inputs(query, key, value)
    num_q, heads, dim = query.shape
    num_k = key.size(0)
    left, right = check_int("left", left, 0), check_int("right", right, 0)
    ptr = _check_layout(ptr, num_q, "ptr", "query rows", query.device)
    key_ptr = _check_layout(key_ptr, num_k, "key_ptr", "key rows", query.device)
    if key_ptr.numel() != ptr.numel():
        raise ValueError(f"key_ptr must describe as many examples as ptr ({ptr.numel() - 1}), got {key_ptr.numel() - 1}")
    if scale is None:
        scale = 1.0 / math.sqrt(dim)
    elif isinstance(scale, bool) or not isinstance(scale, Real):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, Real) or not 0 <= dropout_p <= 1:
        raise ValueError(f"dropout_p must be a float in [0, 1], got {dropout_p!r}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a Tensor [E, H] or None, got {type(bias).__name__}")
    if bias is not None:
        bias = bias.to(query.device, query.dtype)
    if query.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(query.device.type):
        # Scores and softmax in half precision lost ~5x the accuracy of SDPA's fused kernels,
        # which keep scores in fp32 (relative error 0.8% against 0.17% at w=64 in bf16): the
        # blocked kernel runs in fp32, outside autocast, and hands its output back in the input dtype.
        with torch.autocast(query.device.type, enabled=False):
            out, weights = window_attention(query.float(), key.float(), value.float(), ptr, key_ptr, left, right,
                                            scale, None if bias is None else bias.float(), dropout_p, need_weights,
                                            block_size, num_edges)
        return out.to(query.dtype), None if weights is None else weights.to(query.dtype)
    block_size = check_int("block_size", min(max(left, right, 16), 128) if block_size is None else block_size, 1)
    if need_weights and num_edges is None:
        num_edges = bias.size(0) if bias is not None else _count_edges(ptr, key_ptr, left, right)
    # Dropout draws its seed from torch's generator, so that torch.manual_seed governs it.
    seed = torch.randint(0, 2**62, (), device="cpu") if dropout_p > 0 else torch.zeros((), dtype=torch.long)
    out, weights = window_forward(query, key, value, bias, ptr, key_ptr, left, right, float(scale), float(dropout_p),
                                  seed, block_size, need_weights, num_edges or 0)
    return out, weights if need_weights else None


def _count_edges(ptr: Tensor, key_ptr: Tensor, left: int, right: int) -> int:
    """Edges of ``Band(left, right)`` on the layout: keys per query, summed over the queries."""
    n_q, n_k = ptr.diff(), key_ptr.diff()
    batch = torch.repeat_interleave(torch.arange(n_q.numel(), device=ptr.device), n_q)
    t = torch.arange(batch.numel(), device=ptr.device) - ptr[batch]
    lo = (t - left).clamp(min=0)
    hi = torch.minimum(t + right + 1, n_k[batch])
    return int((hi - lo).clamp(min=0).sum())
