r"""A learned attention span: each head learns how far it looks.

After "Adaptive Attention Span in Transformers" (Sukhbaatar et al., 2019): head :math:`h` weighs
a key at path distance :math:`x = |i - j|` by the soft mask

.. math::
    m_h(x) = \operatorname{clamp}\left(\frac{R + z_h - x}{R}, 0, 1\right)

with a learned span :math:`z_h \in [0, S]` and a ramp of width :math:`R`. Multiplying the
softmax weights by :math:`m_h` and renormalising equals adding :math:`\log m_h(x)` to the
scores, so the mask is an edge bias (``attn_bias``) on a maximal window ``window(S + R)``:
the window backend computes it and the network learns its own range instead of being told.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.nn.positional import relative_positions
from graphattn.utils.checks import check_float, check_int

__all__ = ["LearnedSpan"]


class LearnedSpan(nn.Module):
    r"""Per-head learned span as a score bias ``[E, num_heads]`` on the edges of :attr:`pattern`.

    Args:
        num_heads (int): attention heads.
        max_span (int): the largest span :math:`S` a head can learn.
        ramp (int, optional): width :math:`R` of the soft edge. (default: 8)
        init_fraction (float, optional): initial span as a fraction of ``max_span``. (default: 0.5)
        min_mask (float, optional): floor of the mask inside ``log``, which keeps gradients finite.
            (default: 1e-4)

    Shapes:
        - **input:** ``edge_index`` :math:`(2, E)` of ``pattern.edge_index(ptr)``, ``ptr`` :math:`(B + 1)`,
          ``distance`` :math:`(E)` (optional)
        - **output:** :math:`(E, H)`
    """

    def __init__(self, num_heads: int, max_span: int, ramp: int = 8, init_fraction: float = 0.5, min_mask: float = 1e-4):
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, 1)
        self.max_span = check_int("max_span", max_span, 1)
        self.ramp = check_int("ramp", ramp, 1)
        self.init_fraction = check_float("init_fraction", init_fraction, 0.0, 1.0)
        if not 0.0 < check_float("min_mask", min_mask, 0.0, 1.0):
            raise ValueError(f"min_mask must be in (0, 1], got {min_mask}")
        self.min_mask = float(min_mask)
        # The span is stored as a fraction of max_span, so its learning rate does not depend on S.
        self.span_fraction = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.span_fraction, self.init_fraction)

    @property
    def pattern(self) -> P.Pattern:
        """The maximal window whose edges can carry a non-zero weight."""
        return P.window(self.max_span + self.ramp)

    def spans(self) -> Tensor:
        """The learned spans :math:`z_h` in positions, ``[H]``."""
        return self.span_fraction.detach().clamp(0, 1) * self.max_span

    def penalty(self) -> Tensor:
        """Mean span as a fraction of ``max_span``: an L1 cost that keeps spans as short as they can be."""
        return self.span_fraction.clamp(0, 1).mean()

    def forward(self, edge_index: Tensor, ptr: Tensor, distance: Optional[Tensor] = None) -> Tensor:
        """The bias ``[E, H]``; ``distance`` may cache ``relative_positions(edge_index, ptr).abs()``
        when several layers share the edges."""
        if distance is None:
            distance = relative_positions(edge_index, ptr).abs()
        distance = distance.to(self.span_fraction.dtype)  # [E]
        span = self.span_fraction.clamp(0, 1) * self.max_span  # [H]
        # clamp(0, 1) then the floor min_mask > 0, in one pass over the [E, H] scores.
        mask = ((self.ramp + span.unsqueeze(0) - distance.unsqueeze(1)) / self.ramp).clamp(self.min_mask, 1)
        return mask.log()  # [E, H]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_heads={self.num_heads}, max_span={self.max_span}, ramp={self.ramp})"
