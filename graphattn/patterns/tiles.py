r"""Which ``[block_q, block_k]`` tiles of the ``[N_q, N_k]`` mask a pattern touches and fills.

What a block-sparse kernel (FlexAttention's ``BlockMask``) asks of a pattern: the tiles it must
visit, and those it may take whole without evaluating the rule. Patterns answer through
:meth:`~graphattn.patterns.Pattern.block_sparsity`: runs of keys by a difference array over
their rows (:func:`run_blocks`), anything else by counting its edges per tile
(:func:`edge_blocks`); unions and intersections combine tile-wise. Each costs ``O(N + E)`` time
and one grid of ``ceil(N_q / block_q) x ceil(N_k / block_k)`` booleans, never ``N_q x N_k``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["BlockSparsity", "run_blocks", "edge_blocks"]


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


def run_blocks(lo: Tensor, hi: Tensor, num_cols: int, block_rows: int, block_cols: int) -> BlockSparsity:
    """Tiles of a pattern where row ``r`` attends the columns ``lo[r] <= c < hi[r]`` (``lo``,
    ``hi``: ``[rows]``, global column indices)."""
    grid = (math.ceil(lo.numel() / block_rows), math.ceil(num_cols / block_cols))
    rows = torch.arange(lo.numel(), device=lo.device) // block_rows
    first = torch.div(lo, block_cols, rounding_mode="floor")
    last = torch.where(hi > lo, torch.div(hi - 1, block_cols, rounding_mode="floor"), first - 1)  # empty: none
    touched = _cover(rows, first, last, grid) > 0
    # A tile is full when all block_rows rows cover it completely: column blocks inside [lo, hi).
    full_first = torch.div(lo + block_cols - 1, block_cols, rounding_mode="floor")
    full = _cover(rows, full_first, torch.div(hi, block_cols, rounding_mode="floor") - 1, grid) == block_rows
    return BlockSparsity(touched, full)


def edge_blocks(edge_index: Tensor, num_q: int, num_k: int, block_q: int, block_k: int) -> BlockSparsity:
    """Tiles of any edge list ``[2, E]`` (row 0 key, row 1 query, no duplicates), by counting
    its edges per tile: exact."""
    num_qb, num_kb = math.ceil(num_q / block_q), math.ceil(num_k / block_k)
    tile = torch.div(edge_index[1], block_q, rounding_mode="floor") * num_kb + \
        torch.div(edge_index[0], block_k, rounding_mode="floor")
    counts = torch.bincount(tile, minlength=num_qb * num_kb).view(num_qb, num_kb)
    return BlockSparsity(counts > 0, counts == block_q * block_k)
