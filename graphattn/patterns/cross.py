"""Cross-attention patterns: the queries of one batch attend the keys of another."""
from __future__ import annotations

from typing import Optional

from graphattn.patterns.bands import dense
from graphattn.patterns.base import Pattern, check_pattern

__all__ = ["Cross", "cross"]


class Cross(Pattern):
    """Cross-attention: queries of one batch (``ptr``) attend keys of another (``key_ptr``)."""

    bipartite = True

    def __init__(self, pattern: Pattern):
        check_pattern(pattern, "pattern")
        if not pattern.position_based:
            raise ValueError(f"cross() needs a position-based pattern, got {pattern!r}")
        self.pattern = pattern
        self.contiguous = pattern.contiguous

    def build_edges(self, query, key):
        return self.pattern.build_edges(query, key)

    def allows(self, src, dst, query, key):
        return self.pattern.allows(src, dst, query, key)

    def mask_rule(self, query, key):
        return self.pattern.mask_rule(query, key)

    def block_sparsity(self, query, key, block_q, block_k):
        return self.pattern.block_sparsity(query, key, block_q, block_k)

    def as_band(self):
        return self.pattern.as_band()

    def key_ranges(self, query, key):
        """The inner pattern's run of keys per query, when it is contiguous."""
        return self.pattern.key_ranges(query, key)

    def __repr__(self):
        return "cross" if repr(self.pattern) == "dense" else f"cross({self.pattern!r})"


def cross(pattern: Optional[Pattern] = None) -> Pattern:
    """Cross-attention: queries of one batch (``ptr``) attend keys of another (``key_ptr``).

    Query ``t`` of example ``b`` attends the keys of example ``b`` that ``pattern`` allows,
    in local positions (default: all of them, as encoder-decoder attention does).
    """
    return Cross(dense() if pattern is None else pattern)
