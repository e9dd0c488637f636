r"""Transformer encoder and decoder layers of "Attention Is All You Need", with
:class:`~graphattn.nn.GraphMultiheadAttention` over attention patterns.

The modules mirror ``torch.nn.TransformerEncoderLayer`` and ``TransformerDecoderLayer`` down to
the parameter names, so ``from_torch`` loads a torch layer's ``state_dict`` as it is.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.nn.attention import GraphMultiheadAttention
from graphattn.nn.kv_cache import KVCache
from graphattn.utils.checks import eager_only

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "stack_edges"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation: Union[str, Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}")
    return _ACTIVATIONS[activation]


def stack_edges(attn: GraphMultiheadAttention, pattern: P.Pattern, ptr: Tensor, key_ptr: Optional[Tensor]):
    """The pattern's edges when ``attn`` runs on the edges backend, built once for a stack of
    layers; None when its backend (dense, window) needs none."""
    lengths = ptr.diff() if key_ptr is None else torch.cat([ptr.diff(), key_ptr.diff()])
    # Traced code reads no lengths: a band then keeps its own backend, whatever the lengths.
    max_len = int(lengths.max()) if lengths.numel() and eager_only() else 0
    if attn.select_backend(pattern, max_len)[0] != "edges":
        return None
    return pattern.edge_index(ptr, key_ptr if pattern.bipartite else None)


def _sublayer(x: Tensor, norm_first: bool, norm: nn.Module, block: Callable[[Tensor], Tensor]) -> Tensor:
    """A residual block with its LayerNorm: before the block (pre-norm) or after the sum (post-norm)."""
    return x + block(norm(x)) if norm_first else norm(x + block(x))


def _cached_self_attention(attn: GraphMultiheadAttention, h: Tensor, cache: KVCache, layer: int, positions: Tensor,
                           rel_bias: Optional[nn.Module] = None) -> Tensor:
    """Self-attention of the newest positions ``h [M, d]``: their keys and values into ``cache``,
    then attention to what the cache holds (a ``step`` of the encoder and decoder layers)."""
    cache.write(layer, torch.arange(h.size(0), device=h.device), positions, *attn.project_key_value(h))
    return cache.attend(attn, layer, h, positions, rel_bias)


def _attend(attn: GraphMultiheadAttention, x, pattern: P.Pattern, ptr: Tensor, key_ptr: Optional[Tensor],
            edge_index: Optional[Tensor], attn_bias: Optional[Tensor] = None) -> Tensor:
    """``attn`` along the pattern, or along its edges when the stack built them already."""
    if edge_index is not None:
        return attn(x, edge_index, attn_bias=attn_bias)
    return attn(x, pattern=pattern, ptr=ptr, key_ptr=key_ptr, attn_bias=attn_bias)


class _TorchLayer(nn.Module):
    """``from_torch`` and ``__repr__`` of the encoder and decoder layers, whose constructors take
    the arguments of their torch counterpart (``torch_class``) in its order."""

    torch_class: type = nn.Module

    @classmethod
    def from_torch(cls, layer: nn.Module, **kwargs):
        """A layer with the configuration and weights of the corresponding ``torch.nn`` layer."""
        if not isinstance(layer, cls.torch_class):
            raise TypeError(f"layer must be a torch.nn.{cls.torch_class.__name__}, got {type(layer).__name__}")
        new = cls(
            layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features,
            layer.dropout.p, layer.activation, layer.norm1.eps, layer.norm_first,
            layer.linear1.bias is not None, **kwargs,
        )
        new.load_state_dict(layer.state_dict())
        return new

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.self_attn.embed_dim}, nhead={self.self_attn.num_heads}, "
                f"pattern={self.pattern!r}, norm_first={self.norm_first})")


class TransformerEncoderLayer(_TorchLayer):
    r"""Self-attention over a pattern and a feed-forward block, each with residual + LayerNorm.

    .. math::
        \text{post-norm:}\ x \leftarrow \mathrm{LN}_1(x + \mathrm{SA}(x)),\
        x \leftarrow \mathrm{LN}_2(x + \mathrm{FF}(x)) \qquad
        \text{pre-norm:}\ x \leftarrow x + \mathrm{SA}(\mathrm{LN}_1(x)),\
        x \leftarrow x + \mathrm{FF}(\mathrm{LN}_2(x))

    with :math:`\mathrm{FF}(x) = W_2\,\mathrm{act}(W_1 x + b_1) + b_2` and SA a
    :class:`GraphMultiheadAttention` over the edges of ``pattern``.

    Args:
        d_model (int): model width.
        nhead (int): attention heads.
        dim_feedforward (int, optional): hidden width of the feed-forward block. (default: 2048)
        dropout (float, optional): dropout. (default: 0.1)
        activation (str or callable, optional): ``"relu"`` or ``"gelu"``. (default: ``"relu"``)
        layer_norm_eps (float, optional): LayerNorm epsilon. (default: 1e-5)
        norm_first (bool, optional): pre-norm instead of post-norm. (default: False)
        bias (bool, optional): biases in linear layers and LayerNorms. (default: True)
        pattern (Pattern, optional): attention pattern. (default: ``dense()``)
        attn_kwargs (dict, optional): more arguments of :class:`GraphMultiheadAttention`
            (``backend``, ``edge_dim``, ...).

    Shapes:
        - **input:** ``x`` :math:`(N, d)`, ``ptr`` :math:`(B + 1)`
        - **output:** :math:`(N, d)`
    """

    torch_class = nn.TransformerEncoderLayer

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Union[str, Callable[[Tensor], Tensor]] = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
        pattern: Optional[P.Pattern] = None,
        attn_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.self_attn = GraphMultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, **(attn_kwargs or {}))
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.pattern = P.as_pattern(pattern, "pattern", P.dense())

    def reset_parameters(self) -> None:
        for module in (self.self_attn, self.linear1, self.linear2, self.norm1, self.norm2):
            module.reset_parameters()

    def forward(self, x: Tensor, ptr: Tensor, edge_index: Optional[Tensor] = None, attn_bias: Optional[Tensor] = None) -> Tensor:
        """``x: [N, d_model]``, ``ptr: [B + 1]``.

        ``edge_index`` (``[2, E]``): attend these pairs instead of the layer's pattern; a stack
        passes ``pattern.edge_index(ptr)``, built once for all its layers. ``attn_bias``
        (``[E, H]``) has one row per pair, in the order of ``edge_index`` or of the pattern's edges.
        """
        return self._blocks(x, lambda h: _attend(self.self_attn, h, self.pattern, ptr, None, edge_index, attn_bias))

    def prefill(self, x: Tensor, ptr: Tensor, cache: KVCache, layer: int, edge_index: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None) -> Tensor:
        """:meth:`forward`, and the keys and values of the positions ``cache`` can hold written into
        its ``layer`` (incremental decoding then continues with :meth:`step`)."""
        keep, rows, pos = cache.prefix_slots(ptr)

        def attend(h):
            cache.write(layer, rows, pos, *self.self_attn.project_key_value(h[keep]))
            return _attend(self.self_attn, h, self.pattern, ptr, None, edge_index, attn_bias)

        return self._blocks(x, attend)

    def step(self, x: Tensor, cache: KVCache, layer: int, positions: Tensor,
             rel_bias: Optional[nn.Module] = None) -> Tensor:
        """:meth:`forward` on the newest position of ``M`` sequences, ``x: [M, d]`` at
        ``positions [M]``: its keys and values go into ``cache`` (entry ``layer``), and it attends
        the cached ones that the causal band reaches (``rel_bias``: a
        :class:`~graphattn.nn.RelativePositionBias` of the distance). Returns ``[M, d]``."""
        return self._blocks(x, lambda h: _cached_self_attention(self.self_attn, h, cache, layer, positions, rel_bias))

    def _blocks(self, x: Tensor, attend: Callable[[Tensor], Tensor]) -> Tensor:
        """The layer around its self-attention ``attend``: the one forward of :meth:`forward`,
        :meth:`prefill` and :meth:`step`."""
        x = _sublayer(x, self.norm_first, self.norm1, lambda h: self.dropout1(attend(h)))
        return _sublayer(x, self.norm_first, self.norm2, self._ff_block)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(_TorchLayer):
    r"""Masked self-attention, cross-attention to the memory and feed-forward.

    Post-norm: :math:`x \leftarrow \mathrm{LN}_1(x + \mathrm{SA}(x))`,
    :math:`x \leftarrow \mathrm{LN}_2(x + \mathrm{CA}(x, m))`,
    :math:`x \leftarrow \mathrm{LN}_3(x + \mathrm{FF}(x))`; pre-norm applies each LayerNorm to the
    block's input instead. SA follows ``pattern`` (default ``causal()``); CA follows
    ``cross_pattern`` (default ``cross()``: every source position of the same example).

    Args: as :class:`TransformerEncoderLayer`, plus ``cross_pattern``.

    Shapes:
        - **input:** ``x`` :math:`(N_t, d)`, ``memory`` :math:`(N_s, d)`, ``ptr`` :math:`(B + 1)`,
          ``memory_ptr`` :math:`(B + 1)`
        - **output:** :math:`(N_t, d)`
    """

    torch_class = nn.TransformerDecoderLayer

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Union[str, Callable[[Tensor], Tensor]] = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
        pattern: Optional[P.Pattern] = None,
        cross_pattern: Optional[P.Pattern] = None,
        attn_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        kwargs = attn_kwargs or {}
        self.self_attn = GraphMultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, **kwargs)
        self.multihead_attn = GraphMultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, **kwargs)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.pattern = P.as_pattern(pattern, "pattern", P.causal())
        cross_pattern = P.as_pattern(cross_pattern, "cross_pattern", P.cross())
        self.cross_pattern = cross_pattern if cross_pattern.bipartite else P.cross(cross_pattern)

    def reset_parameters(self) -> None:
        for module in (self.self_attn, self.multihead_attn, self.linear1, self.linear2, self.norm1, self.norm2, self.norm3):
            module.reset_parameters()

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        ptr: Tensor,
        memory_ptr: Tensor,
        edge_index: Optional[Tensor] = None,
        cross_edge_index: Optional[Tensor] = None,
    ) -> Tensor:
        """``x: [N_t, d]``, ``memory: [N_s, d]``; ``edge_index`` and ``cross_edge_index``: attend these
        pairs instead of the patterns' (a stack builds them once for all its layers)."""
        return self._blocks(
            x, lambda h: _attend(self.self_attn, h, self.pattern, ptr, None, edge_index),
            lambda h: _attend(self.multihead_attn, (memory, h), self.cross_pattern, ptr, memory_ptr, cross_edge_index))

    def step(self, x: Tensor, cache: KVCache, layer: int, positions: Tensor) -> Tensor:
        """:meth:`forward` on the newest position of ``M`` sequences (incremental decoding).

        Args:
            x (Tensor): decoder input of the newest position, ``[M, d]``.
            cache (KVCache): keys and values of earlier positions (entry ``layer``), full or a ring
                under ``causal&window:w``, and the memory's keys and values of the cross-attention
                (projected once per source batch, :meth:`Transformer.start_decoding`).
            layer (int): this layer's entry in ``cache``.
            positions (LongTensor): ``[M]`` position of ``x`` in each sequence.

        Returns:
            ``[M, d]``; the newest keys and values are in ``cache``.
        """
        return self._blocks(
            x, lambda h: _cached_self_attention(self.self_attn, h, cache, layer, positions),
            lambda h: cache.attend_memory(self.multihead_attn, layer, h, self.cross_pattern))

    def _blocks(self, x: Tensor, attend: Callable[[Tensor], Tensor], attend_memory: Callable[[Tensor], Tensor]) -> Tensor:
        """The layer around its self-attention ``attend`` and cross-attention ``attend_memory``:
        the one forward of :meth:`forward` and :meth:`step`."""
        x = _sublayer(x, self.norm_first, self.norm1, lambda h: self.dropout1(attend(h)))
        x = _sublayer(x, self.norm_first, self.norm2, lambda h: self.dropout2(attend_memory(h)))
        return _sublayer(x, self.norm_first, self.norm3, self._ff_block)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def check_incremental(self) -> None:
        """Raise unless cached decoding can reproduce this layer's patterns exactly."""
        if not self.pattern.is_causal_band:
            raise ValueError(f"cached decoding needs a causal band decoder pattern, got {self.pattern!r}")
        if self.cross_pattern.pattern != P.dense():
            raise ValueError(f"cached decoding needs the dense cross pattern, got {self.cross_pattern!r}")
