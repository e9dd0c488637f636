r"""Any pattern through FlexAttention: a ``mask_mod`` from the pattern's rule, a ``BlockMask`` from
its structure, and edge biases as a ``score_mod``.

The flex backend of :class:`~graphattn.nn.GraphMultiheadAttention`. A ragged batch is one packed
sequence (``[1, H, N, D]``, no padding) whose document mask comes from ``ptr``: the pattern's
:meth:`~graphattn.patterns.Pattern.mask_rule` is False across examples. Which ``(query block,
key block)`` tiles the kernel visits, and which it may take whole without evaluating the rule,
comes from the pattern itself (:func:`block_sparsity`): closed forms for runs of keys (dense,
causal, window, block and their intersections), global tokens and the document mask, and the
pattern's edges for the rest (random keys, dilated windows, graphs). Building it costs
``O(N + E_rest)`` time and one ``[N_q / 128, N_k / 128]`` grid, as the ``BlockMask`` itself.

torch 2.13 runs FlexAttention compiled on CUDA (forward and backward) and on CPU (forward only);
uncompiled, it is a reference that materialises the ``[H, N_q, N_k]`` scores.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import AuxRequest, BlockMask
from torch.nn.attention.flex_attention import flex_attention as torch_flex_attention

from graphattn.ops.edges import CSRLayout, edge_scores, edge_softmax
from graphattn.patterns import Cross, Intersection, Pattern, RangePattern, Union as UnionPattern, as_pattern
from graphattn.patterns.base import EdgeTable
from graphattn.patterns.sparse import GlobalTokens
from graphattn.utils.batch import Layout
from graphattn.utils.checks import PtrLike, check_int

__all__ = ["BlockSparsity", "block_sparsity", "pattern_block_mask", "flex_attention", "flex_available",
           "CPU_BACKWARD_ERROR"]

#: why a CPU call with gradients cannot run, as the error says it
CPU_BACKWARD_ERROR = (
    "the flex backend has no backward on CPU: torch {version}'s FlexAttention runs forward only there "
    "('FlexAttention does not support backward on CPU'). Call it without gradients (torch.no_grad() or "
    "torch.inference_mode()), or train on CPU with backend 'edges', 'window' or 'dense'; on CUDA it trains.")

BlockSize = Union[int, tuple[int, int]]


class BlockSparsity(NamedTuple):
    """Which tiles of ``[block_q rows, block_k columns]`` a pattern touches, on a grid
    ``[ceil(N_q / block_q), ceil(N_k / block_k)]``.

    ``touched`` holds every tile with at least one edge (a superset is allowed: the rule masks
    the rest), ``full`` only complete tiles whose every pair is an edge (a subset is allowed: the
    rule is then evaluated where it need not be). Union and intersection combine them tile-wise.
    """

    touched: Tensor  # [nqb, nkb] bool
    full: Tensor  # [nqb, nkb] bool

    def __or__(self, other: "BlockSparsity") -> "BlockSparsity":
        return BlockSparsity(self.touched | other.touched, self.full | other.full)

    def __and__(self, other: "BlockSparsity") -> "BlockSparsity":
        return BlockSparsity(self.touched & other.touched, self.full & other.full)

    def transpose(self) -> "BlockSparsity":
        return BlockSparsity(self.touched.t(), self.full.t())


def _sizes(block_size: BlockSize) -> tuple[int, int]:
    if isinstance(block_size, tuple) and len(block_size) == 2:
        return check_int("block_size[0]", block_size[0], 1), check_int("block_size[1]", block_size[1], 1)
    size = check_int("block_size", block_size, 1)
    return size, size


def _cover(rows: Tensor, first: Tensor, last: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[row blocks, column blocks]`` int32: how many rows of each row block cover each
    column block, where row ``r`` (of block ``rows[r]``) covers column blocks ``first..last``.
    A difference array along the columns, summed: ``O(rows + grid)``, however long the runs."""
    num_rb, num_cb = grid
    keep = last >= first
    rows, first, last = rows[keep], first[keep], last[keep]
    diff = torch.zeros(num_rb * (num_cb + 1), dtype=torch.int32, device=rows.device)
    ones = torch.ones_like(rows, dtype=torch.int32)
    diff.index_add_(0, rows * (num_cb + 1) + first, ones)
    diff.index_add_(0, rows * (num_cb + 1) + last + 1, -ones)
    return diff.view(num_rb, num_cb + 1).cumsum(1, dtype=torch.int32)[:, :num_cb]


def _run_blocks(lo: Tensor, hi: Tensor, num_cols: int, block_rows: int, block_cols: int) -> BlockSparsity:
    """Tiles of a pattern where row ``r`` attends the columns ``lo[r] <= c < hi[r]``."""
    grid = (math.ceil(lo.numel() / block_rows), math.ceil(num_cols / block_cols))
    rows = torch.arange(lo.numel(), device=lo.device) // block_rows
    first = torch.div(lo, block_cols, rounding_mode="floor")
    last = torch.where(hi > lo, torch.div(hi - 1, block_cols, rounding_mode="floor"), first - 1)  # empty: none
    touched = _cover(rows, first, last, grid) > 0
    # A tile is full when all block_rows rows cover it completely: column blocks inside [lo, hi).
    full_first = torch.div(lo + block_cols - 1, block_cols, rounding_mode="floor")
    full = _cover(rows, full_first, torch.div(hi, block_cols, rounding_mode="floor") - 1, grid) == block_rows
    return BlockSparsity(touched, full)


def _edge_blocks(edge_index: Tensor, num_q: int, num_k: int, block_q: int, block_k: int) -> BlockSparsity:
    """Tiles of any edge list, by counting its edges per tile (edges are unique)."""
    num_qb, num_kb = math.ceil(num_q / block_q), math.ceil(num_k / block_k)
    tile = torch.div(edge_index[1], block_q, rounding_mode="floor") * num_kb + \
        torch.div(edge_index[0], block_k, rounding_mode="floor")
    counts = torch.bincount(tile, minlength=num_qb * num_kb).view(num_qb, num_kb)
    return BlockSparsity(counts > 0, counts == block_q * block_k)


def block_sparsity(pattern: Pattern, query: Layout, key: Layout, block_size: BlockSize = 128) -> BlockSparsity:
    """The tiles a pattern touches and fills on the layouts ``query`` and ``key``
    (from :meth:`~graphattn.patterns.Pattern.layouts`), without its edges where a closed form
    exists: runs of keys (:class:`~graphattn.patterns.RangePattern`: dense, causal, window,
    block, their intersections, in cross-attention too), global tokens (the runs of their rows
    and of their columns), unions and intersections of those; the edges of anything else.

    Args:
        pattern (Pattern): the attention pattern.
        query, key (Layout): the batch's layouts (the same object for self-attention).
        block_size (int or (int, int)): tile rows (queries) and columns (keys). (default: 128)

    Returns:
        :class:`BlockSparsity` on the grid ``[ceil(N_q / block_q), ceil(N_k / block_k)]``.
    """
    block_q, block_k = _sizes(block_size)
    if isinstance(pattern, Cross):
        return block_sparsity(pattern.pattern, query, key, block_size)
    if isinstance(pattern, UnionPattern):
        return block_sparsity(pattern.a, query, key, block_size) | block_sparsity(pattern.b, query, key, block_size)
    if isinstance(pattern, Intersection):
        return block_sparsity(pattern.a, query, key, block_size) & block_sparsity(pattern.b, query, key, block_size)
    if isinstance(pattern, RangePattern):
        lo, hi = pattern.key_ranges(query, key)
        return _run_blocks(lo, hi, key.num_nodes, block_q, block_k)
    if isinstance(pattern, GlobalTokens):
        indices = torch.tensor(pattern.indices, dtype=torch.long, device=query.ptr.device)
        # Global queries read their example's keys; global keys are read by their example's queries.
        q_global, k_global = torch.isin(query.pos, indices), torch.isin(key.pos, indices)
        rows = _run_blocks(torch.where(q_global, key.ptr[query.batch], 0),
                           torch.where(q_global, key.ptr[query.batch + 1], 0), key.num_nodes, block_q, block_k)
        cols = _run_blocks(torch.where(k_global, query.ptr[key.batch], 0),
                           torch.where(k_global, query.ptr[key.batch + 1], 0), query.num_nodes, block_k, block_q)
        return rows | cols.transpose()
    return _edge_blocks(pattern.build_edges(query, key), query.num_nodes, key.num_nodes, block_q, block_k)


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """BlockMask's form of a tile grid: the count per query block ``[1, 1, nqb]`` and the key
    blocks, those in the grid first in increasing order, ``[1, 1, nqb, nkb]`` (int32)."""
    count = tiles.sum(1, dtype=torch.int32)
    order = torch.argsort(tiles.logical_not().to(torch.int8), dim=1, stable=True).to(torch.int32)
    return count[None, None], order[None, None]


def _block_mask(pattern: Pattern, query: Layout, key: Layout, block_size: BlockSize) -> BlockMask:
    block_q, block_k = _sizes(block_size)
    rule = pattern.mask_rule(query, key)

    def mask_mod(b, h, q_idx, kv_idx):
        return rule(q_idx, kv_idx)

    tiles = block_sparsity(pattern, query, key, (block_q, block_k))
    partial = tiles.touched & ~tiles.full
    return BlockMask.from_kv_blocks(*_ordered(partial), *_ordered(tiles.full), BLOCK_SIZE=(block_q, block_k),
                                    mask_mod=mask_mod, seq_lengths=(query.num_nodes, key.num_nodes))


def pattern_block_mask(pattern, ptr: PtrLike, key_ptr: Optional[PtrLike] = None, graph: Optional[Tensor] = None,
                       block_size: BlockSize = 128) -> BlockMask:
    """A FlexAttention ``BlockMask`` of ``pattern`` on a packed ragged batch.

    Queries and keys are the flat rows of the batches ``ptr`` and ``key_ptr`` (PyG's offsets);
    the mask's ``mask_mod`` is the pattern's rule (True = may attend, False across examples) and
    its tiles come from :func:`block_sparsity`. Build it once per batch and pass it to every
    layer (:func:`flex_attention`'s ``block_mask``), as FlexAttention's own users do.

    Args:
        pattern (Pattern or str): the attention pattern (or its spec, :func:`~graphattn.patterns.parse`).
        ptr (LongTensor): query layout ``[B + 1]``.
        key_ptr (LongTensor, optional): key layout ``[B + 1]`` for cross-attention.
        graph (LongTensor, optional): the batch's graph ``[2, E_g]``, for graph patterns.
        block_size (int or (int, int)): tile size, a multiple of the kernel's own (128 on CUDA).

    Returns:
        ``BlockMask`` of shape ``[1, 1, N_q, N_k]``.
    """
    pattern = as_pattern(pattern)
    query, key = pattern.layouts(ptr, key_ptr, graph)
    return _block_mask(pattern, query, key, block_size)


def _position_mod(edge_index: Tensor, contiguous: bool, num_queries: int):
    """``position(i, j)``: where the edge ``(j, i)`` sits in the pattern's sorted edge list
    (``0 <= position <= E``; meaningless, but in bounds, where it is no edge)."""
    if contiguous:  # each query's keys are one run: its first key and an offset
        rowptr = torch.searchsorted(edge_index[1], torch.arange(num_queries + 1, device=edge_index.device))
        first = torch.cat([edge_index[0], edge_index.new_zeros(1)])[rowptr[:-1]]
        # A tensor bound, not a Python int: a compiled kernel must not depend on E's value.
        num_edges = torch.tensor(edge_index.size(1), device=edge_index.device)
        return lambda i, j: torch.minimum((rowptr[i] + j - first[i]).clamp(min=0), num_edges)
    return EdgeTable.of(edge_index).position


def _score_mod(bias: Tensor, edge_index: Tensor, contiguous: bool, num_queries: int):
    """A ``score_mod`` adding ``bias [E, H]`` (on the pattern's sorted edges) to each score."""
    position = _position_mod(edge_index, contiguous, num_queries)
    # [H, E + 1]: one gather per score; the zero column is where non-edges land.
    per_head = torch.cat([bias.t(), bias.new_zeros(bias.size(1), 1)], 1)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + per_head[h, position(q_idx, kv_idx)]

    return score_mod


@functools.cache
def _compiled(device_type: str):
    # FlexAttention is fused only when compiled; one compiled function serves every call. On CPU
    # torch 2.13's C++ template fails to build with dynamic shapes ("cur_kvSplitSize8 was not
    # declared"), so there each new batch size compiles anew (forward-only, a reference path).
    return torch.compile(torch_flex_attention, dynamic=False if device_type == "cpu" else None)


def flex_available(device: Union[str, torch.device]) -> bool:
    """Whether FlexAttention has a fused kernel on ``device``: CPU (forward only) and CUDA GPUs
    of compute capability 8.0 or newer (Triton's FlexAttention templates target those)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu"


def _check(query: Tensor, key: Tensor, value: Tensor, bias, edge_index, need_weights: bool) -> None:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating point Tensor [N, H, D], got "
                            f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
    if not query.dtype == key.dtype == value.dtype or not query.device == key.device == value.device:
        raise TypeError(f"query, key and value must share one dtype and device, got {query.dtype}/{query.device}, "
                        f"{key.dtype}/{key.device} and {value.dtype}/{value.device}")
    if not query.size(1) == key.size(1) == value.size(1) or key.size(2) != query.size(2) or value.size(0) != key.size(0):
        raise ValueError(f"query [N_q, H, D], key [N_k, H, D] and value [N_k, H, D_v] disagree: got "
                         f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}")
    if (bias is not None or need_weights) and edge_index is None:
        raise ValueError("bias and need_weights need edge_index [2, E], the pattern's sorted edges")
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (edge_index.size(1), query.size(1))):
        raise ValueError(f"bias must have shape [E, H] = [{edge_index.size(1)}, {query.size(1)}] (one row per edge "
                         f"of edge_index), got {tuple(getattr(bias, 'shape', ()))}")
    needs_grad = any(t is not None and t.requires_grad for t in (query, key, value, bias))
    if query.device.type == "cpu" and torch.is_grad_enabled() and needs_grad:
        raise NotImplementedError(CPU_BACKWARD_ERROR.format(version=torch.__version__.split("+")[0]))


def _edge_weights(query, key, edge_index, scale, bias) -> Tensor:
    """The softmax weights ``[E, H]`` on the edges: one SDDMM and a segment softmax, in fp32.
    (FlexAttention's logsumexp would save the softmax, but its CPU kernel does not return it.)"""
    with torch.autocast(query.device.type, enabled=False):  # the sparse kernels run in fp32
        layout = CSRLayout.build(edge_index, query.size(0), key.size(0))
        scores = edge_scores(*layout, query.float(), key.float(), float(scale))
        if bias is not None:
            scores = scores + bias.float()
        return edge_softmax(layout.rowptr, layout.row, scores).to(query.dtype)


def _attend(attend, query, key, value, score_mod, block_mask, scale, has_key: bool):
    """``(out [N_q, H, D_v], has_key [N_q] or None)`` from FlexAttention on the packed batch."""
    q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (query, key, value))  # (1, H, N, D)
    if not has_key:
        return attend(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)[0].transpose(0, 1), None
    if query.device.type != "cpu" or attend is torch_flex_attention:
        out, aux = attend(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                          return_aux=AuxRequest(lse=True))
        return out[0].transpose(0, 1), torch.isfinite(aux.lse[0, 0])  # no key: logsumexp -inf
    # The compiled CPU kernel returns no logsumexp: a column of ones among the values comes out
    # as 1 where a query has keys (the weights sum to 1) and 0 where it has none.
    v = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)
    out = attend(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)[0].transpose(0, 1)
    return out[..., :-1], out[:, 0, -1] > 0.5


def flex_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    ptr: PtrLike,
    key_ptr: Optional[PtrLike],
    pattern,
    graph: Optional[Tensor] = None,
    scale: Optional[float] = None,
    bias: Optional[Tensor] = None,
    edge_index: Optional[Tensor] = None,
    need_weights: bool = False,
    block_mask: Optional[BlockMask] = None,
    block_size: BlockSize = 128,
    compiled: bool = True,
    return_has_key: bool = False,
):
    r"""Multi-head attention of a ragged batch along any pattern, through FlexAttention.

    .. math::
        s_{ij} = \text{scale} \cdot \langle q_i, k_j \rangle + b_{ij}, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)} s_{ij}, \qquad
        o_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij} v_j

    per head, where :math:`\mathcal{N}(i)` are the keys of query :math:`i` in
    ``pattern.edge_index(ptr, key_ptr, graph)``: the pattern's rule is the ``mask_mod``, its
    :func:`block_sparsity` the ``BlockMask``, and the bias :math:`b_{ij}` (edge features,
    relative positions, ``attn_bias``: one row per edge) a ``score_mod`` that finds each pair's
    row. A query without keys outputs zeros. Softmax only, and no dropout: FlexAttention has
    neither other normalisations nor dropout on the weights (use :func:`edge_attention`).

    Args:
        query, key, value (Tensor): projected ``[N_q, H, D]``, ``[N_k, H, D]``, ``[N_k, H, D_v]``,
            queries not yet scaled.
        ptr (LongTensor): query layout ``[B + 1]``.
        key_ptr (LongTensor, optional): key layout ``[B + 1]`` for cross-attention; None for
            self-attention.
        pattern (Pattern or str): the attention pattern.
        graph (LongTensor, optional): the batch's graph ``[2, E_g]``, for graph patterns.
        scale (float, optional): score scale. (default: ``1 / sqrt(D)``)
        bias (Tensor, optional): score bias ``[E, H]``, one row per edge of ``edge_index``.
        edge_index (LongTensor, optional): ``[2, E]``, the pattern's edges as
            ``pattern.edge_index`` returns them (sorted by query, then key); needed with ``bias``
            or ``need_weights``.
        need_weights (bool): also return the weights :math:`\alpha` ``[E, H]`` on ``edge_index``
            (recomputed on the edges by one SDDMM, never an ``[N_q, N_k]`` matrix).
        block_mask (BlockMask, optional): a mask from :func:`pattern_block_mask` for this pattern
            and batch, to build once and reuse across layers. (default: built here)
        block_size (int or (int, int)): tile size of a mask built here. (default: 128)
        compiled (bool): run FlexAttention's fused kernel (compiled once per pattern form);
            False runs its reference implementation, which materialises ``[H, N_q, N_k]``
            scores: for tests on small inputs. (default: :obj:`True`)
        return_has_key (bool): also return whether each query has any key, ``[N_q]`` bool
            (from the kernel's logsumexp; the layer zeroes the others' output).

    Returns:
        ``(out [N_q, H, D_v], weights [E, H] or None)``, and ``has_key [N_q]`` with ``return_has_key``.

    Raises:
        NotImplementedError: on CPU with gradients (torch 2.13's FlexAttention has no CPU backward).
    """
    _check(query, key, value, bias, edge_index, need_weights)
    pattern = as_pattern(pattern)
    query_layout, key_layout = pattern.layouts(ptr, key_ptr, graph)
    num_q, heads = query.shape[:2]
    if scale is None:
        scale = query.size(-1) ** -0.5
    if num_q == 0 or key.size(0) == 0 or (edge_index is not None and edge_index.size(1) == 0):
        out = query.new_zeros(num_q, heads, value.size(-1))
        weights = query.new_zeros(0, heads) if need_weights else None
        has_key = torch.zeros(num_q, dtype=torch.bool, device=query.device)
        return (out, weights, has_key) if return_has_key else (out, weights)
    if query.device.type == "cpu" and not torch.is_grad_enabled():
        # torch refuses CPU inputs that require grad even where no graph is recorded.
        query, key, value = query.detach(), key.detach(), value.detach()
        bias = None if bias is None else bias.detach()
    if block_mask is None:
        block_mask = _block_mask(pattern, query_layout, key_layout, block_size)
    score_mod = None
    if bias is not None:
        score_mod = _score_mod(bias.to(query.device), edge_index, pattern.contiguous, num_q)
    attend = torch_flex_attention if not compiled or torch.compiler.is_compiling() else _compiled(query.device.type)
    out, has_key = _attend(attend, query, key, value, score_mod, block_mask, float(scale), return_has_key)
    weights = _edge_weights(query, key, edge_index, scale, bias) if need_weights else None
    return (out, weights, has_key) if return_has_key else (out, weights)
