"""The encoder classifier that the pattern comparison trains under each pattern."""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn
from torch_geometric.nn import global_mean_pool

from graphattn import patterns as P
from graphattn.nn import LearnedSpan, TransformerEncoderLayer, positional_encoding, relative_positions
from graphattn.utils.batch import local_positions, ptr_to_batch

__all__ = ["SequenceClassifier"]


class SequenceClassifier(nn.Module):
    r"""Encoder classifier for comparing patterns: embeddings + sinusoidal PE, ``num_layers``
    :class:`TransformerEncoderLayer` over ``pattern``, a linear head on the first position
    (``readout="cls"``, so the pattern's reach decides what the classifier can see) or on the
    mean of all positions (``readout="mean"``).

    With ``learned_span=S`` each layer learns per-head spans up to ``S`` (:class:`LearnedSpan`)
    on the window ``window(S + ramp)`` instead of following ``pattern``.

    Shapes: ``tokens [N]``, ``ptr [B + 1]`` -> logits ``[B, num_classes]``.
    """

    def __init__(self, vocab: int, num_classes: int, pattern: Optional[P.Pattern] = None, d_model: int = 64,
                 num_heads: int = 4, num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1,
                 learned_span: Optional[int] = None, readout: str = "cls"):
        super().__init__()
        if readout not in ("cls", "mean"):
            raise ValueError(f"readout must be 'cls' or 'mean', got {readout!r}")
        self.readout = readout
        self.spans = None
        if learned_span is not None:
            self.spans = nn.ModuleList([LearnedSpan(num_heads, learned_span) for _ in range(num_layers)])
            pattern = self.spans[0].pattern
        self.pattern = P.as_pattern(pattern, "pattern", P.dense())
        self.d_model = d_model
        self.embed = nn.Embedding(vocab, d_model, padding_idx=0)
        self.layers = nn.ModuleList([
            TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout, norm_first=True, pattern=self.pattern)
            for _ in range(num_layers)
        ])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: Tensor, ptr: Tensor) -> Tensor:
        x = self.embed(tokens) * math.sqrt(self.d_model)
        x = x + positional_encoding(local_positions(ptr), self.d_model, dtype=x.dtype, device=x.device)
        edge_index = distance = None
        if self.spans is not None:
            # The bias follows the window's edges; the layers still run the window backend.
            span_edges = self.pattern.edge_index(ptr)
            distance = relative_positions(span_edges, ptr).abs()  # [E], shared by the layers
        elif self.layers[0].self_attn.select_backend(self.pattern, int(ptr.diff().max()))[0] == "edges":
            edge_index = self.pattern.edge_index(ptr)  # built once for all layers, not once per layer
        for i, layer in enumerate(self.layers):
            bias = None if self.spans is None else self.spans[i](span_edges, ptr, distance)  # [E, H]
            x = layer(x, ptr, edge_index, attn_bias=bias)
        x = self.norm(x)
        pooled = x[ptr[:-1]] if self.readout == "cls" else global_mean_pool(x, ptr_to_batch(ptr))
        return self.head(pooled)
