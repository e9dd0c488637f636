r"""Dense and causal attention of ragged batches through SDPA, without padding where it can.

The dense backend of :class:`~graphattn.nn.GraphMultiheadAttention`. Each example's queries
attend all keys of the same example of ``key_ptr`` (with ``causal=True``: keys at local
positions ``s <= t``), through :func:`torch.nn.functional.scaled_dot_product_attention`:

* examples of equal length are already a padded batch, as a view: no padding, no mask;
* on CUDA, ragged examples go as nested jagged tensors whose offsets are ``ptr`` itself (the
  ``cu_seqlens`` of FlashAttention's and memory-efficient attention's variable-length kernels):
  no padding either (``varlen``);
* otherwise (CPU, biases, weights) they are padded to the longest example and masked.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

from graphattn.utils.checks import eager_only

__all__ = ["dense_attention"]


def _lengths_uniform(sizes: Tensor) -> Optional[int]:
    """The common length of all examples, or None when they differ (or there are none)."""
    if sizes.numel() == 0:
        return None
    first = int(sizes[0])
    return first if bool((sizes == first).all()) else None


class _Padding(NamedTuple):
    """Where each flat row sits in the padded ``[B, n, ...]`` batch."""

    batch: Tensor  # [N] example of each row
    pos: Tensor  # [N] position in the example
    length: int  # n, the longest example


def _padding(ptr: Tensor, num_rows: int) -> _Padding:
    sizes = ptr.diff()
    batch = torch.repeat_interleave(torch.arange(sizes.numel(), device=ptr.device), sizes, output_size=num_rows)
    return _Padding(batch, torch.arange(num_rows, device=ptr.device) - ptr[batch], int(sizes.max()))


def _pad(x: Tensor, where: _Padding, batch_size: int) -> Tensor:
    out = x.new_zeros(batch_size, where.length, *x.shape[1:])
    out[where.batch, where.pos] = x
    return out.transpose(1, 2)  # [B, H, n, D]


def _allowed(q_sizes: Tensor, k_sizes: Tensor, max_q: int, max_k: int, causal: bool) -> Tensor:
    """``[B, 1, n_q, n_k]`` bool, True = may attend; rows without any key may attend everything."""
    batch_size, device = q_sizes.numel(), q_sizes.device
    s = torch.arange(max_k, device=device)
    allowed = (s.unsqueeze(0) < k_sizes.view(-1, 1)).view(batch_size, 1, 1, max_k)  # the key exists
    if causal:
        allowed = allowed & (s.view(1, 1, 1, -1) <= torch.arange(max_q, device=device).view(1, 1, -1, 1))
    # Rows without keys (padding, empty key examples) would be NaN in softmax; let them read
    # everything: the caller zeroes their output.
    return allowed | ~allowed.any(-1, keepdim=True)


def dense_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    ptr: Tensor,
    key_ptr: Tensor,
    causal: bool = False,
    scale: Optional[float] = None,
    bias: Optional[Tensor] = None,
    edge_index: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    varlen: Optional[bool] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    r"""Dense (or causal) attention of ragged examples through SDPA, padded only where needed.

    .. math::
        o_i = \sum_{j} \operatorname{softmax}_j \left(\text{scale} \cdot \langle q_i, k_j \rangle
        + b_{ij}\right) v_j

    over the keys :math:`j` of query :math:`i`'s example (:math:`s \le t` with ``causal``).

    Args:
        query, key, value (Tensor): ``[Nq, H, D]``, ``[Nk, H, D]``, ``[Nk, H, Dv]``.
        ptr, key_ptr (LongTensor): ``[B + 1]`` layouts of queries and keys.
        causal (bool): query ``t`` attends keys ``s <= t`` only.
        scale (float, optional): score scale (default: ``1 / sqrt(D)``).
        bias (Tensor, optional): score bias ``[E, H]`` on the edges ``edge_index`` of the pattern.
        edge_index (LongTensor, optional): ``[2, E]``, the pattern's edges, needed with ``bias``
            or ``need_weights``.
        dropout_p (float): dropout on the weights (pass 0 in evaluation, as to SDPA).
        need_weights (bool): also return the weights ``[E, H]`` on ``edge_index``.
        varlen (bool, optional): ragged examples as nested jagged tensors (offsets ``ptr``)
            instead of a padded batch: ``None`` takes it where a fused variable-length kernel
            runs (CUDA; no ``bias``, no weights, and for ``causal`` equal query and key lengths
            per example), ``True`` asks for it (on CPU: torch's unfused nested-tensor path, not
            causal), ``False`` pads. Traced code takes the automatic choice. (default: :obj:`None`)

    Returns:
        ``(out [Nq, H, Dv], weights [E, H] or None)``.
    """
    scale = query.size(2) ** -0.5 if scale is None else scale
    # One example (known without a guard on a dynamic batch size): no padding, traceable as is.
    one = statically_known_true(ptr.numel() == 2) and statically_known_true(key_ptr.numel() == 2)
    if not eager_only() and not (one and bias is None and not need_weights):
        # Traced (torch.compile, torch.export): the value-dependent padding runs inside an operator.
        seed = torch.randint(0, 2**62, (), device="cpu") if dropout_p > 0 else torch.zeros((), dtype=torch.long)
        num_edges = edge_index.size(1) if edge_index is not None else 0
        out, weights = dense_forward(query, key, value, ptr, key_ptr, causal, float(scale), bias, edge_index,
                                     float(dropout_p), seed, need_weights, num_edges)
        return out, weights if need_weights else None
    if varlen and (bias is not None or need_weights):
        raise ValueError("varlen=True cannot add a bias or return weights: nested-tensor SDPA takes no mask")
    return _dense(query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, need_weights, varlen)


def _dense(query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, need_weights, varlen=None):
    num_heads = query.size(1)
    if query.size(0) == 0 or key.size(0) == 0:
        weights = query.new_zeros(0 if edge_index is None else edge_index.size(1), num_heads) if need_weights else None
        return query.new_zeros(query.size(0), num_heads, value.size(-1)), weights
    q_sizes, k_sizes = ptr.diff(), key_ptr.diff()
    one = statically_known_true(ptr.numel() == 2) and statically_known_true(key_ptr.numel() == 2)
    n_q, n_k = (query.size(0), key.size(0)) if one else (_lengths_uniform(q_sizes), _lengths_uniform(k_sizes))
    if n_q is not None and n_k is not None and bias is None and not need_weights:
        # Equal lengths: the flat batch is already a padded batch, as a view.
        shape = (q_sizes.numel(), -1, num_heads)
        q, k, v = (t.view(*shape, t.size(-1)).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
        return out.transpose(1, 2).reshape(query.size(0), num_heads, -1), None
    if varlen is not False and bias is None and not need_weights:
        nested = _nested(query, key, value, ptr, key_ptr, causal, dropout_p, varlen)
        if nested is not None:
            out = F.scaled_dot_product_attention(*nested, dropout_p=dropout_p, is_causal=causal, scale=scale)
            return out.transpose(1, 2).values(), None  # [Nq, H, Dv]: the values of the jagged output
    return _padded_attention(query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, need_weights)


def _nested(query, key, value, ptr, key_ptr, causal, dropout_p, varlen) -> Optional[tuple[Tensor, Tensor, Tensor]]:
    """Queries, keys and values as nested jagged ``[B', H, j, D]`` tensors over the non-empty
    examples, or None where the layout or the device has no variable-length kernel (``varlen``
    None; ``True`` raises instead)."""
    if varlen is None and not query.is_cuda:  # the fused variable-length kernels are CUDA's
        return None
    q_sizes, k_sizes = ptr.diff(), key_ptr.diff()
    # An example with queries but no keys (or keys but no queries) has no jagged form: its rows
    # would join a neighbour. Causal with unequal lengths: kernels align the diagonal differently.
    bad = bool(((q_sizes > 0) != (k_sizes > 0)).any()) or (causal and not torch.equal(q_sizes, k_sizes))
    if bad:
        if varlen:
            raise ValueError("varlen=True needs every example to have queries and keys, or neither "
                             "(and, with causal=True, as many of each)")
        return None
    keep = q_sizes > 0  # fused kernels take no empty sequence: empty examples leave the batch
    parts = []
    for x, offsets, sizes in ((query, ptr, q_sizes), (key, key_ptr, k_sizes), (value, key_ptr, k_sizes)):
        offsets, sizes = torch.cat([offsets[:1], offsets[1:][keep]]), sizes[keep]
        parts.append(torch.nested.nested_tensor_from_jagged(
            x, offsets, min_seqlen=int(sizes.min()), max_seqlen=int(sizes.max())).transpose(1, 2))
    params = torch.backends.cuda.SDPAParams(*parts, None, dropout_p, causal, False)
    fused = query.is_cuda and (torch.backends.cuda.can_use_flash_attention(params)
                               or torch.backends.cuda.can_use_efficient_attention(params))
    if varlen is None and not fused:
        return None
    if varlen and causal and not fused:
        raise ValueError(f"varlen=True with causal=True needs a fused CUDA kernel (torch's nested-tensor SDPA has "
                         f"no causal fallback), and none runs on {query.device} for these inputs")
    return tuple(parts)


def _padded_attention(query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, need_weights):
    batch_size, num_heads = ptr.numel() - 1, query.size(1)
    at_q, at_k = _padding(ptr, query.size(0)), _padding(key_ptr, key.size(0))
    q, k, v = _pad(query, at_q, batch_size), _pad(key, at_k, batch_size), _pad(value, at_k, batch_size)
    allowed = _allowed(ptr.diff(), key_ptr.diff(), at_q.length, at_k.length, causal)
    if bias is not None:
        mask = torch.full((batch_size, num_heads, at_q.length, at_k.length), -math.inf,
                          dtype=query.dtype, device=query.device).masked_fill(allowed, 0.0)
        src, dst = edge_index
        mask[at_q.batch[dst], :, at_q.pos[dst], at_k.pos[src]] = bias
    else:
        mask = allowed
    weights = None
    if need_weights:
        # Scores in fp32 as SDPA's fused kernels keep them (in bf16 they cost 6x its error), and
        # outside autocast, which would take the matmuls back to bf16.
        with torch.autocast(query.device.type, enabled=False):
            scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
            scores = scores.masked_fill(~allowed, -math.inf) if mask.dtype == torch.bool else scores + mask.float()
            weights_full = torch.softmax(scores, -1)
            dropped = F.dropout(weights_full, dropout_p) if dropout_p > 0 else weights_full
            out = torch.matmul(dropped, v.float()).to(query.dtype)
        src, dst = edge_index
        weights = weights_full[at_q.batch[dst], :, at_q.pos[dst], at_k.pos[src]].to(query.dtype)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.transpose(1, 2)[at_q.batch, at_q.pos], weights  # [Nq, H, Dv]


# For traced code, the same computation as a pair of custom operators (torch.library): the
# padding's sizes depend on the values of ptr, which torch.compile and torch.export need not see.
# The backward recomputes the forward (dropout masks come back from the same seed) and takes
# its gradients with autograd; eager code keeps autograd's own saved tensors instead.


def _seeded(query: Tensor, seed: Tensor, dropout_p: float):
    if dropout_p <= 0:
        return contextlib.nullcontext()
    devices = [query.device.index or 0] if query.device.type == "cuda" else []
    return _fork_and_seed(devices, int(seed))


@contextlib.contextmanager
def _fork_and_seed(devices, seed: int):
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.library.custom_op("graphattn::dense_forward", mutates_args=())
def dense_forward(query: Tensor, key: Tensor, value: Tensor, ptr: Tensor, key_ptr: Tensor, causal: bool, scale: float,
                  bias: Optional[Tensor], edge_index: Optional[Tensor], dropout_p: float, seed: Tensor,
                  need_weights: bool, num_edges: int) -> tuple[Tensor, Tensor]:
    """``(out [N_q, H, D_v], weights [E, H] or [0, H])`` of :func:`dense_attention`."""
    with _seeded(query, seed, dropout_p):
        out, weights = _dense(query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, need_weights)
    return out.contiguous(), weights if weights is not None else query.new_zeros(0, query.size(1))


@dense_forward.register_fake
def _(query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, seed, need_weights, num_edges):
    rows = num_edges if need_weights else 0
    return query.new_empty(query.size(0), query.size(1), value.size(2)), query.new_empty(rows, query.size(1))


@torch.library.custom_op("graphattn::dense_backward", mutates_args=())
def dense_backward(grad_out: Tensor, grad_weights: Optional[Tensor], query: Tensor, key: Tensor, value: Tensor,
                   ptr: Tensor, key_ptr: Tensor, causal: bool, scale: float, bias: Optional[Tensor],
                   edge_index: Optional[Tensor], dropout_p: float,
                   seed: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(query, key, value, bias or [0, H])`` of :func:`dense_forward`, by recomputation."""
    # torch.func.vjp, not torch.autograd: inside an operator's kernel autograd records nothing.
    inputs = (query, key, value) + ((bias,) if bias is not None else ())
    need_weights = grad_weights is not None

    def forward(q, k, v, *maybe_bias):
        with _seeded(query, seed, dropout_p):
            out, weights = _dense(q, k, v, ptr, key_ptr, causal, scale, maybe_bias[0] if maybe_bias else None,
                                  edge_index, dropout_p, need_weights)
        return (out, weights) if need_weights else (out,)

    _, vjp = torch.func.vjp(forward, *inputs)
    grads = vjp((grad_out, grad_weights) if need_weights else (grad_out,))
    grad_bias = grads[3] if bias is not None else query.new_zeros(0, query.size(1))
    return grads[0], grads[1], grads[2], grad_bias


@dense_backward.register_fake
def _(grad_out, grad_weights, query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, seed):
    grad_bias = query.new_empty(0, query.size(1)) if bias is None else torch.empty_like(bias)
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), grad_bias


def _dense_setup_context(ctx, inputs, output) -> None:
    query, key, value, ptr, key_ptr, causal, scale, bias, edge_index, dropout_p, seed, need_weights, _ = inputs
    ctx.save_for_backward(query, key, value, ptr, key_ptr, bias, edge_index, seed)
    ctx.args = (causal, scale, dropout_p, need_weights)


def _dense_autograd(ctx, grad_out, grad_weights):
    query, key, value, ptr, key_ptr, bias, edge_index, seed = ctx.saved_tensors
    causal, scale, dropout_p, need_weights = ctx.args
    grad_q, grad_k, grad_v, grad_bias = dense_backward(
        grad_out, grad_weights if need_weights else None, query, key, value, ptr, key_ptr, causal, scale, bias,
        edge_index, dropout_p, seed)
    return (grad_q, grad_k, grad_v, None, None, None, None, grad_bias if bias is not None else None,
            None, None, None, None, None)


dense_forward.register_autograd(_dense_autograd, setup_context=_dense_setup_context)
