"""The two-layer perceptron that graph blocks, heads and virtual nodes share."""
from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(channels: int, hidden: int, out: int, dropout: float = 0.0) -> nn.Sequential:
    """``Linear(channels, hidden) -> GELU -> Dropout -> Linear(hidden, out)``; shapes ``[*, channels] -> [*, out]``."""
    return nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))
