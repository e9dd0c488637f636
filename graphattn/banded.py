r"""Banded ("sliding chunks") attention: multi-head attention restricted to a band of positions.

The window backend of :class:`GraphMultiheadAttention`. For the pattern
``Band(left, right)`` (query ``t`` reads keys ``t - left .. t + right`` of its example) it
computes exactly what the dense masked computation does, in time and memory proportional to
``n * (left + right + block_size)`` instead of ``n ** 2``.

How: every example's queries are cut into blocks of ``block_size`` rows; all blocks of all
examples form one flat sequence (ragged batches pad each example only to a multiple of the
block, never to the longest example). Query block ``j`` reads one contiguous window of
``L <= block_size + left + right`` keys of its own example, starting at ``j * block_size - left``,
so one batched matmul gives scores ``[H, blocks, block_size, L]``; a boolean band mask
(True = may attend) removes the pairs outside the band and outside the example.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.patterns import _check_int, check_ptr

__all__ = ["banded_attention"]


def _check_qkv(query, key, value) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor [N, H, D], got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating point tensor, got dtype {t.dtype}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape [N, H, D] (3-D), got {tuple(t.shape)}")
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise TypeError(
            f"query, key and value must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    if key.device != query.device or value.device != query.device:
        raise ValueError(
            f"query, key and value must be on one device, got {query.device}, {key.device}, {value.device}"
        )
    if key.size(1) != query.size(1) or value.size(1) != query.size(1):
        raise ValueError(
            f"query, key and value must have the same number of heads (dim 1), got "
            f"{query.size(1)}, {key.size(1)} and {value.size(1)}"
        )
    if key.size(2) != query.size(2):
        raise ValueError(
            f"key must have the head dim of query ({query.size(2)}), got {key.size(2)}"
        )
    if value.size(0) != key.size(0):
        raise ValueError(
            f"value must have one row per key ({key.size(0)}), got {value.size(0)}"
        )


def _check_layout(ptr, num_rows: int, name: str, rows: str, device) -> Tensor:
    ptr = check_ptr(ptr, name).to(device)
    if int(ptr[-1]) != num_rows:
        raise ValueError(f"{name}[-1] ({int(ptr[-1])}) must equal the number of {rows} ({num_rows})")
    return ptr


def banded_attention(
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
    training: bool = False,
    need_weights: bool = False,
    block_size: Optional[int] = None,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    r"""Multi-head attention where local query :math:`t` attends local keys
    :math:`t - \text{left} \le s \le t + \text{right}` of the same example.

    .. math::
        s_{ij} = \text{scale} \cdot \langle q_i, k_j \rangle + b_{ij}, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} s_{ij}, \qquad
        o_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij} v_j

    per head, where :math:`\mathcal{N}(i)` are the edges of
    ``Band(left, right).edge_index(ptr, key_ptr)`` into :math:`i` (key positions clipped to the
    key example). A query without keys (empty key example, or cross-attention with
    ``t - left >= n_key``) outputs zeros and receives zero gradients.

    Args:
        query (Tensor): projected, unscaled queries.
        key (Tensor): projected keys.
        value (Tensor): projected values.
        ptr (LongTensor): query layout ``[B + 1]``; example ``b`` owns rows ``ptr[b]:ptr[b+1]``.
        key_ptr (LongTensor): key layout ``[B + 1]`` (``ptr`` itself for self-attention).
        left (int): keys up to ``left`` positions before the query.
        right (int): keys up to ``right`` positions after the query.
        scale (float, optional): score scale (default: ``1 / sqrt(D)``).
        bias (Tensor, optional): additive score bias ``[E, H]``, one row per edge of
            ``Band(left, right).edge_index(ptr, key_ptr)`` in that order (sorted by query, then
            key). (default: :obj:`None`)
        dropout_p (float, optional): dropout on the attention weights, applied only when
            ``training`` is True. (default: :obj:`0.0`)
        training (bool, optional): whether dropout is active. (default: :obj:`False`)
        need_weights (bool, optional): also return the attention weights :math:`\alpha`
            (before dropout, as PyG's attention layers do). (default: :obj:`False`)
        block_size (int, optional): query rows per block; a speed knob only, results do not
            depend on it. (default: ``max(left, right)`` clamped to ``[16, 128]``)

    Shapes:
        - **input:** query :math:`(N_q, H, D)`, key :math:`(N_k, H, D)`,
          value :math:`(N_k, H, D_v)`, ptr and key_ptr :math:`(B + 1)`, bias :math:`(E, H)`
        - **output:** :math:`(N_q, H, D_v)`, and attention weights :math:`(E, H)` if
          ``need_weights``
    """
    _check_qkv(query, key, value)
    device, dtype = query.device, query.dtype
    num_q, heads, dim = query.shape
    num_k, dim_v = key.size(0), value.size(2)
    left, right = _check_int("left", left, 0), _check_int("right", right, 0)
    ptr = _check_layout(ptr, num_q, "ptr", "query rows", device)
    key_ptr = _check_layout(key_ptr, num_k, "key_ptr", "key rows", device)
    if key_ptr.numel() != ptr.numel():
        raise ValueError(
            f"key_ptr must describe as many examples as ptr ({ptr.numel() - 1}), got {key_ptr.numel() - 1}"
        )
    if scale is None:
        scale = 1.0 / math.sqrt(dim)
    elif isinstance(scale, bool) or not isinstance(scale, Real):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, Real) or not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be a float in [0, 1], got {dropout_p!r}")
    if block_size is None:
        block_size = min(max(left, right, 16), 128)
    block_size = _check_int("block_size", block_size, 1)

    n_q, n_k = ptr.diff(), key_ptr.diff()  # [B]
    max_q = int(n_q.max()) if n_q.numel() else 0
    max_k = int(n_k.max()) if n_k.numel() else 0
    # Blocks longer than the longest example would only add padding.
    c = max(1, min(block_size, max_q))
    # A window never needs more keys than the longest key example holds.
    win = max(1, min(c + left + right, max_k))

    # Block layout: example b gets ceil(n_q / c) blocks, all examples one after another.
    num_blocks = (n_q + c - 1) // c  # [B]
    first_block = num_blocks.cumsum(0) - num_blocks  # [B]
    nb = int(num_blocks.sum())
    arange_b = torch.arange(n_q.numel(), device=device)
    blk_b = torch.repeat_interleave(arange_b, num_blocks, output_size=nb)  # [nb] example
    blk_j = torch.arange(nb, device=device) - first_block[blk_b]  # [nb] block within example
    start = (blk_j * c - left).clamp(min=0)  # [nb] first key position of the window
    # Key u of the window minus query r of the block is (u - r) + (start - j * c): compare the
    # small [c, win] table against per-block bounds instead of building an int [nb, c, win].
    rel = torch.arange(win, device=device) - torch.arange(c, device=device).unsqueeze(1)  # [c, win]
    shift = (start - blk_j * c).view(-1, 1, 1)  # [nb, 1, 1]
    mask = (rel >= -left - shift) & (rel <= right - shift)  # [nb, c, win], True = may attend
    t = blk_j.unsqueeze(1) * c + torch.arange(c, device=device)  # [nb, c] query position
    s = start.unsqueeze(1) + torch.arange(win, device=device)  # [nb, win] key position
    mask &= (t < n_q[blk_b].unsqueeze(1)).unsqueeze(2)
    mask &= (s < n_k[blk_b].unsqueeze(1)).unsqueeze(1)
    has_key = mask.any(-1)  # [nb, c]

    # Row of each query in the padded block layout.
    q_b = torch.repeat_interleave(arange_b, n_q, output_size=num_q)
    q_row = first_block[q_b] * c + torch.arange(num_q, device=device) - ptr[q_b]  # [Nq]

    if num_k == 0:
        # Keep one (fully masked) key so the gathers below have something to read.
        key = torch.cat([key, key.new_zeros(1, heads, dim)])
        value = torch.cat([value, value.new_zeros(1, heads, dim_v)])
    k_idx = (key_ptr[blk_b].unsqueeze(1) + s).clamp_(max=key.size(0) - 1).view(-1)  # [nb * win]

    # Heads first, so every matmul below is one contiguous batched GEMM over (H, blocks).
    q_h = (query * scale).transpose(0, 1)  # (H, Nq, D)
    q_pad = query.new_zeros(heads, nb * c, dim).index_copy(1, q_row, q_h)  # (H, nb*c, D)
    k_win = key.transpose(0, 1).contiguous().index_select(1, k_idx)  # (H, nb*win, D)
    v_win = value.transpose(0, 1).contiguous().index_select(1, k_idx)  # (H, nb*win, Dv)
    scores = torch.matmul(
        q_pad.view(heads, nb, c, dim), k_win.view(heads, nb, win, dim).transpose(-1, -2)
    )  # (H, nb, c, win)

    edges = None
    if bias is not None or need_weights:
        edges = mask.view(-1).nonzero().squeeze(1)  # band edges, in edge_index order
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a Tensor [E, H] or None, got {type(bias).__name__}")
        if bias.dim() != 2 or bias.size(0) != edges.numel() or bias.size(1) != heads:
            raise ValueError(
                f"bias must have shape [E, H] = [{edges.numel()}, {heads}] (one row per band edge), "
                f"got {tuple(bias.shape)}"
            )
        # Row-major order of the mask's True entries is exactly the edge order, so one
        # index_copy puts every bias row in place.
        full = bias.new_zeros(nb * c * win, heads).index_copy(0, edges, bias.to(dtype))
        scores += full.t().view(heads, nb, c, win)

    # -inf outside the band; rows with no key at all (padding or truly empty queries) keep
    # their finite scores so softmax stays NaN-free, and are zeroed at the output.
    # (In place: matmul does not need its output for backward.)
    scores.masked_fill_(~(mask | ~has_key.unsqueeze(-1)), float("-inf"))
    attn = torch.softmax(scores, dim=-1)  # (H, nb, c, win)
    del scores
    weights = attn
    if training and dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p, training=True)
    out = torch.matmul(attn, v_win.view(heads, nb, win, dim_v))  # (H, nb, c, Dv)
    out = out.view(heads, nb * c, dim_v).index_select(1, q_row)  # (H, Nq, Dv)
    out = out.masked_fill(~has_key.view(-1)[q_row].view(1, -1, 1), 0.0)
    out = out.transpose(0, 1).contiguous()  # (Nq, H, Dv)
    if need_weights:
        alpha = weights.reshape(heads, -1).index_select(1, edges).t()  # (E, H)
        return out, alpha
    return out
