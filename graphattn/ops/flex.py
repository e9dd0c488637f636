r"""Any pattern through FlexAttention: a ``mask_mod`` from the pattern's rule, a ``BlockMask`` from
its structure, and edge biases as a ``score_mod``.

The flex backend of :class:`~graphattn.nn.GraphMultiheadAttention`. A ragged batch is one packed
sequence (``[1, H, N, D]``, no padding) whose document mask comes from ``ptr``: the pattern's
:meth:`~graphattn.patterns.Pattern.mask_rule` is False across examples, and a pattern without a
closed-form rule is looked up in a hash table of its edges (:class:`EdgeTable`, :func:`mask_rule`).
Which ``(query block, key block)`` tiles the kernel visits, and which it may take whole without
evaluating the rule, comes from the pattern itself (:func:`block_sparsity`): closed forms for runs
of keys (dense, causal, window, block and their intersections), global tokens and the document
mask, and the pattern's edges for the rest (random keys, dilated windows, graphs). Building it
costs ``O(N + E_rest)`` time and one ``[N_q / 128, N_k / 128]`` grid, as the ``BlockMask`` itself.

torch 2.13 runs FlexAttention compiled on CUDA (forward and backward) and on CPU (forward only);
uncompiled, it is a reference that materialises the ``[H, N_q, N_k]`` scores.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import AuxRequest, BlockMask
from torch.nn.attention.flex_attention import flex_attention as torch_flex_attention

from graphattn.ops.edges import CSRLayout, edge_scores, edge_softmax
from graphattn.patterns import BlockSparsity, MaskRule, Pattern, as_pattern
from graphattn.utils.batch import Layout
from graphattn.utils.checks import PtrLike, check_int

__all__ = ["BlockSparsity", "EdgeTable", "block_sparsity", "mask_rule", "pattern_block_mask", "flex_attention",
           "flex_available", "CPU_BACKWARD_ERROR"]

#: why a CPU call with gradients cannot run, as the error says it
CPU_BACKWARD_ERROR = (
    "the flex backend has no backward on CPU: torch {version}'s FlexAttention runs forward only there "
    "('FlexAttention does not support backward on CPU'). Call it without gradients (torch.no_grad() or "
    "torch.inference_mode()), or train on CPU with backend 'edges', 'window' or 'dense'; on CUDA it trains.")

BlockSize = Union[int, tuple[int, int]]


def _sizes(block_size: BlockSize) -> tuple[int, int]:
    if isinstance(block_size, tuple) and len(block_size) == 2:
        return check_int("block_size[0]", block_size[0], 1), check_int("block_size[1]", block_size[1], 1)
    size = check_int("block_size", block_size, 1)
    return size, size


class EdgeTable(NamedTuple):
    """Edges as a hash table, for membership and position tests inside a kernel.

    The pointwise form of a pattern that has no closed one (graph patterns, patterns of one's
    own). Written here because FlexAttention needs a lookup that a compiled kernel can inline:
    each pair ``(i, j)`` becomes one int64 ``i << 32 | j``, hashed (Fibonacci hashing) into a
    table with linear probing; :meth:`find` checks the ``probes`` slots from the hash, each
    independent of the others. (A binary search over sorted keys chains its steps, and
    inductor's CPU FlexAttention template inlines such chains without sharing them: compiling
    took 12, 16, 29 and 204 s for 1 to 4 steps, 11 s for 8 independent probes;
    ``benchmarks/flex_compile.py``.) About 32 bytes an edge.
    """

    keys: Tensor  # [M + probes] the pair stored in each slot, -1 for none
    ids: Tensor  # [M + probes] its position in the sorted edge list (0 for none)
    bits: Tensor  # () M = 2 ** bits slots for the hashes, at most half full (a tensor: no kernel depends on it)
    probes: int  # slots a lookup checks: the largest displacement + 1, rounded up to a power of 2

    @staticmethod
    def of(edge_index: Tensor) -> "EdgeTable":
        """The table of ``edge_index [2, E]`` (row 0 key ``j``, row 1 query ``i``, no duplicates)."""
        num_edges = edge_index.size(1)
        bits = max(2 * num_edges - 1, 1).bit_length()
        pairs = edge_index[1] << 32 | edge_index[0]
        hashes = _hash(pairs, bits)
        order = torch.argsort(hashes, stable=True)
        sorted_hashes, rank = hashes[order], torch.arange(num_edges, device=pairs.device)
        # Linear probing without wrap-around, all at once: in hash order, each pair takes the first
        # free slot at or after its hash, i.e. slot_k = k + max over l <= k of (hash_l - l).
        slots = rank + torch.cummax(sorted_hashes - rank, 0).values if num_edges else rank
        probes = 1 << (int((slots - sorted_hashes).max()) if num_edges else 0).bit_length()
        size = (1 << bits) + probes
        keys = torch.full((size,), -1, dtype=torch.long, device=pairs.device)
        ids = torch.zeros(size, dtype=torch.long, device=pairs.device)
        keys[slots], ids[slots] = pairs[order], order
        return EdgeTable(keys, ids, torch.tensor(bits, device=pairs.device), probes)

    def find(self, i: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        """``(found, position)``: whether ``(j, i)`` is an edge (key ``j``, query ``i``), and its
        position in the sorted edge list (0 where it is none)."""
        pair = i.long() << 32 | j.long()
        start = _hash(pair, self.bits)
        found, position = None, None
        for probe in range(self.probes):
            hit = self.keys[start + probe] == pair
            here = torch.where(hit, self.ids[start + probe], 0)
            found, position = (hit, here) if found is None else (found | hit, position + here)
        return found, position

    def rule(self, i: Tensor, j: Tensor) -> Tensor:
        """The :data:`MaskRule` of the table."""
        return self.find(i, j)[0]

    def position(self, i: Tensor, j: Tensor) -> Tensor:
        """Where ``(j, i)`` sits in the sorted edge list (0 where it is no edge)."""
        return self.find(i, j)[1]


def _hash(pairs: Tensor, bits) -> Tensor:
    """Fibonacci hashing: the top ``bits`` (an int or a 0-d tensor) bits of ``pairs * 2^64 / golden
    ratio`` (wrapping); the mask clears the sign bits of the arithmetic shift."""
    return ((pairs * -7046029254386353131) >> (64 - bits)) & ((1 << bits) - 1)


def mask_rule(pattern: Pattern, query: Layout, key: Layout) -> MaskRule:
    """The pattern's :meth:`~graphattn.patterns.Pattern.mask_rule`, or, where it has no closed
    form (graphs, patterns of one's own, unions with such a part), a lookup of each pair in an
    :class:`EdgeTable` of its edges: every pattern has a rule. True = may attend."""
    rule = pattern.mask_rule(query, key)
    return rule if rule is not None else EdgeTable.of(pattern.build_edges(query, key)).rule


def block_sparsity(pattern: Pattern, query: Layout, key: Layout, block_size: BlockSize = 128) -> BlockSparsity:
    """The tiles a pattern touches and fills on the layouts ``query`` and ``key``
    (from :meth:`~graphattn.patterns.Pattern.layouts`), as the pattern answers
    (:meth:`~graphattn.patterns.Pattern.block_sparsity`): without its edges where a closed form
    exists (runs of keys: dense, causal, window, block, their intersections, in cross-attention
    too; global tokens; unions and intersections of those), from its edges otherwise.

    Args:
        pattern (Pattern): the attention pattern.
        query, key (Layout): the batch's layouts (the same object for self-attention).
        block_size (int or (int, int)): tile rows (queries) and columns (keys). (default: 128)

    Returns:
        :class:`BlockSparsity` on the grid ``[ceil(N_q / block_q), ceil(N_k / block_k)]``.
    """
    block_q, block_k = _sizes(block_size)
    return pattern.block_sparsity(query, key, block_q, block_k)


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """BlockMask's form of a tile grid: the count per query block ``[1, 1, nqb]`` and the key
    blocks, those in the grid first in increasing order, ``[1, 1, nqb, nkb]`` (int32)."""
    count = tiles.sum(1, dtype=torch.int32)
    order = torch.argsort(tiles.logical_not().to(torch.int8), dim=1, stable=True).to(torch.int32)
    return count[None, None], order[None, None]


def _block_mask(pattern: Pattern, query: Layout, key: Layout, block_size: BlockSize) -> BlockMask:
    block_q, block_k = _sizes(block_size)
    rule = mask_rule(pattern, query, key)

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


# Tiles that fit any CUDA GPU's shared memory, forward (BLOCK_M/N) and backward (BLOCK_M1/N1/M2/N2).
SMALL_TILES = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32,
               "num_stages": 1}


def _fitting(attend):
    """``attend``, retried with :data:`SMALL_TILES` where Triton's default tiles need more shared
    memory than the GPU has: seen on an H200 (torch 2.11) in fp32 for graph and BigBird masks, whose
    edge-table lookups inductor fuses into the kernel ("out of resource ... Reducing block sizes or
    num_stages may help", pytorch/pytorch#133254). The default tiles stay where they fit: they are faster."""
    def call(*args, **kwargs):
        try:
            return attend(*args, **kwargs)
        except Exception as error:  # inductor's InductorError, whose module differs between torch builds
            if "out of resource" not in str(error) or "kernel_options" in kwargs:
                raise
            return attend(*args, kernel_options=SMALL_TILES, **kwargs)
    return call


def _attend(attend, query, key, value, score_mod, block_mask, scale, has_key: bool):
    """``(out [N_q, H, D_v], has_key [N_q] or None)`` from FlexAttention on the packed batch."""
    attend = _fitting(attend)
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
