r"""Attention kernels: the backends of :class:`~graphattn.nn.GraphMultiheadAttention`.

Each takes projected ``query [N_q, H, D]``, ``key [N_k, H, D]``, ``value [N_k, H, D_v]`` and
the structure it exploits, and returns ``(out [N_q, H, D_v], weights [E, H] or None)``; the
weights come back only with ``need_weights=True``, on the pattern's edges in their canonical
order. Dropout applies whenever ``dropout_p > 0`` (callers pass 0 in evaluation, as to SDPA).

* :func:`dense_attention` (``dense.py``): dense and causal patterns, padded blocks through SDPA.
* :func:`edge_attention` (``edges.py``): any edge list, CSR SDDMM / softmax / SpMM.
* :func:`window_attention` (``window.py``): finite bands, blocked and recomputing in backward.
* :func:`flex_attention` (``flex.py``): any pattern through FlexAttention (a ``mask_mod`` from the
  pattern's rule, a ``BlockMask`` from its structure, biases as a ``score_mod``); CUDA, or CPU
  forward only.
"""
from graphattn.ops.dense import dense_attention
from graphattn.ops.edges import NORMALIZATIONS, CSRLayout, edge_attention, gathers_messages, keep_transpose, normalize
from graphattn.ops.flex import (BlockSparsity, EdgeTable, block_sparsity, flex_attention, flex_available,
                                pattern_block_mask)
from graphattn.ops.window import window_attention

__all__ = ["dense_attention", "edge_attention", "window_attention", "flex_attention", "normalize", "keep_transpose",
           "gathers_messages", "CSRLayout", "NORMALIZATIONS", "BlockSparsity", "EdgeTable", "block_sparsity",
           "pattern_block_mask", "flex_available"]
