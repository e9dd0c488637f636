r"""The Transformer of "Attention Is All You Need", built from GraphMultiheadAttention.

A batch of sequences is a batch of path graphs (``x: [N, d_model]``, ``ptr: [B + 1]``). The
encoder's self-attention follows ``encoder_pattern`` (default: dense), the decoder's
``decoder_pattern`` (default: causal), and cross-attention is the bipartite pattern
``cross()`` from every target position to the source positions of the same example.

The modules mirror ``torch.nn.Transformer`` and its layers, down to the parameter names, so
``from_torch`` loads a torch model's ``state_dict`` as it is and then computes the same outputs
(eval mode, fp32, 1e-5), while any pattern of :mod:`graphattn.patterns` can replace the masks.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.attention import GraphMultiheadAttention
from graphattn.sequence import to_flat, to_padded

__all__ = [
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation: Union[str, Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}")
    return _ACTIVATIONS[activation]


def _check_pattern(pattern, name: str, default: P.Pattern) -> P.Pattern:
    if pattern is None:
        return default
    if not isinstance(pattern, P.Pattern):
        raise TypeError(f"{name} must be a graphattn Pattern, got {type(pattern).__name__}")
    return pattern


def _edges_for(attn: GraphMultiheadAttention, pattern: P.Pattern, ptr: Tensor, key_ptr: Optional[Tensor]):
    """The pattern's edges when ``attn`` will need them, computed once for a stack of layers."""
    lengths = ptr.diff() if key_ptr is None else torch.cat([ptr.diff(), key_ptr.diff()])
    max_len = int(lengths.max()) if lengths.numel() else 0
    if attn.select_backend(pattern, max_len)[0] != "edges":
        return None
    return pattern.edge_index(ptr, key_ptr if pattern.bipartite else None)


class TransformerEncoderLayer(nn.Module):
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
        self.pattern = _check_pattern(pattern, "pattern", P.dense())

    def reset_parameters(self) -> None:
        for module in (self.self_attn, self.linear1, self.linear2, self.norm1, self.norm2):
            module.reset_parameters()

    def forward(self, x: Tensor, ptr: Tensor, edge_index: Optional[Tensor] = None, attn_bias: Optional[Tensor] = None) -> Tensor:
        """``x: [N, d_model]``, ``ptr: [B + 1]``; ``edge_index`` may cache ``pattern.edge_index(ptr)``."""
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), ptr, edge_index, attn_bias)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, ptr, edge_index, attn_bias))
        return self.norm2(x + self._ff_block(x))

    def _sa_block(self, x, ptr, edge_index, attn_bias):
        out = self.self_attn(x, edge_index, pattern=self.pattern, ptr=ptr, attn_bias=attn_bias)
        return self.dropout1(out)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer, **kwargs) -> "TransformerEncoderLayer":
        """A layer with the configuration and weights of a ``torch.nn.TransformerEncoderLayer``."""
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(f"layer must be a torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
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


class TransformerDecoderLayer(nn.Module):
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
        self.pattern = _check_pattern(pattern, "pattern", P.causal())
        cross_pattern = _check_pattern(cross_pattern, "cross_pattern", P.cross())
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
        """``x: [N_t, d]``, ``memory: [N_s, d]``; the edge indices may cache the patterns' edges."""
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), ptr, edge_index)
            x = x + self._ca_block(self.norm2(x), memory, ptr, memory_ptr, cross_edge_index)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, ptr, edge_index))
        x = self.norm2(x + self._ca_block(x, memory, ptr, memory_ptr, cross_edge_index))
        return self.norm3(x + self._ff_block(x))

    def _sa_block(self, x, ptr, edge_index):
        return self.dropout1(self.self_attn(x, edge_index, pattern=self.pattern, ptr=ptr))

    def _ca_block(self, x, memory, ptr, memory_ptr, edge_index):
        out = self.multihead_attn((memory, x), edge_index, pattern=self.cross_pattern, ptr=ptr, key_ptr=memory_ptr)
        return self.dropout2(out)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def check_incremental(self) -> None:
        """Raise unless cached decoding can reproduce this layer's patterns exactly."""
        band = self.pattern
        if not (isinstance(band, P.Band) and band.right == 0):
            raise ValueError(f"cached decoding needs a causal band decoder pattern, got {band!r}")
        if self.cross_pattern.pattern != P.dense():
            raise ValueError(f"cached decoding needs the dense cross pattern, got {self.cross_pattern!r}")

    def step(
        self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_ptr: Tensor, cache: Optional[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step of incremental decoding: the newest position of ``M`` sequences.

        Args:
            x (Tensor): decoder input of the newest position, ``[M, d]``.
            memory_kv ((Tensor, Tensor)): the memory's keys and values of this layer's
                cross-attention, ``[N_s, H, D]`` each (computed once per source batch).
            memory_ptr (LongTensor): ``[M + 1]`` layout of the memory.
            cache ((Tensor, Tensor) or None): keys and values of earlier positions that the
                causal band still reaches, ``[M, t, H, D]`` each.

        Returns:
            ``(out [M, d], cache)`` with the newest keys and values appended.
        """
        num = x.size(0)
        one = torch.arange(num + 1, device=x.device)  # one query per sequence
        h = self.norm1(x) if self.norm_first else x
        k_new, v_new = self.self_attn.project_key_value(h)
        if cache is None:
            k, v = k_new.unsqueeze(1), v_new.unsqueeze(1)
        else:
            k, v = torch.cat([cache[0], k_new.unsqueeze(1)], 1), torch.cat([cache[1], v_new.unsqueeze(1)], 1)
        left = self.pattern.left
        if left is not None:  # the band reaches back `left` positions: drop what it can't see
            k, v = k[:, -(left + 1):], v[:, -(left + 1):]
        length = k.size(1)
        sa = self.self_attn(h, key_value=(k.flatten(0, 1), v.flatten(0, 1)), pattern=P.cross(), ptr=one, key_ptr=one * length)
        x = x + self.dropout1(sa) if self.norm_first else self.norm1(x + self.dropout1(sa))
        h = self.norm2(x) if self.norm_first else x
        ca = self.multihead_attn(h, key_value=memory_kv, pattern=self.cross_pattern, ptr=one, key_ptr=memory_ptr)
        x = x + self.dropout2(ca) if self.norm_first else self.norm2(x + self.dropout2(ca))
        x = x + self._ff_block(self.norm3(x)) if self.norm_first else self.norm3(x + self._ff_block(x))
        new_cache = (k[:, 1:], v[:, 1:]) if left is not None and length == left + 1 else (k, v)
        return x, new_cache

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer, **kwargs) -> "TransformerDecoderLayer":
        """A layer with the configuration and weights of a ``torch.nn.TransformerDecoderLayer``."""
        if not isinstance(layer, nn.TransformerDecoderLayer):
            raise TypeError(f"layer must be a torch.nn.TransformerDecoderLayer, got {type(layer).__name__}")
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


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` copies of ``encoder_layer`` and an optional final LayerNorm.

    Shapes: ``x: (N, d)``, ``ptr: (B + 1)`` -> ``(N, d)``.
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        if not isinstance(encoder_layer, TransformerEncoderLayer):
            raise TypeError(f"encoder_layer must be a TransformerEncoderLayer, got {type(encoder_layer).__name__}")
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(P._check_int("num_layers", num_layers, 1))])
        self.num_layers = num_layers
        self.norm = norm

    @classmethod
    def from_torch(cls, encoder: nn.TransformerEncoder, **kwargs) -> "TransformerEncoder":
        """A stack with the layers, final norm and weights of a ``torch.nn.TransformerEncoder``."""
        if not isinstance(encoder, nn.TransformerEncoder):
            raise TypeError(f"encoder must be a torch.nn.TransformerEncoder, got {type(encoder).__name__}")
        layer = TransformerEncoderLayer.from_torch(encoder.layers[0], **kwargs)
        new = cls(layer, len(encoder.layers), copy.deepcopy(encoder.norm))
        new.load_state_dict(encoder.state_dict())
        return new

    def forward(self, x: Tensor, ptr: Tensor) -> Tensor:
        ptr = P.check_ptr(ptr).to(x.device)
        first = self.layers[0]
        # Every layer shares the pattern: build its edges once, if a layer needs them at all.
        edge_index = _edges_for(first.self_attn, first.pattern, ptr, None)
        for layer in self.layers:
            x = layer(x, ptr, edge_index)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of ``num_layers`` copies of ``decoder_layer`` and an optional final LayerNorm.

    Shapes: ``x: (N_t, d)``, ``memory: (N_s, d)``, ``ptr, memory_ptr: (B + 1)`` -> ``(N_t, d)``.
    """

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        if not isinstance(decoder_layer, TransformerDecoderLayer):
            raise TypeError(f"decoder_layer must be a TransformerDecoderLayer, got {type(decoder_layer).__name__}")
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(P._check_int("num_layers", num_layers, 1))])
        self.num_layers = num_layers
        self.norm = norm

    @classmethod
    def from_torch(cls, decoder: nn.TransformerDecoder, **kwargs) -> "TransformerDecoder":
        """A stack with the layers, final norm and weights of a ``torch.nn.TransformerDecoder``."""
        if not isinstance(decoder, nn.TransformerDecoder):
            raise TypeError(f"decoder must be a torch.nn.TransformerDecoder, got {type(decoder).__name__}")
        layer = TransformerDecoderLayer.from_torch(decoder.layers[0], **kwargs)
        new = cls(layer, len(decoder.layers), copy.deepcopy(decoder.norm))
        new.load_state_dict(decoder.state_dict())
        return new

    def forward(self, x: Tensor, memory: Tensor, ptr: Tensor, memory_ptr: Tensor) -> Tensor:
        ptr = P.check_ptr(ptr).to(x.device)
        memory_ptr = P.check_ptr(memory_ptr, "memory_ptr").to(x.device)
        if memory_ptr.numel() != ptr.numel():
            raise ValueError(
                f"memory_ptr must describe as many examples as ptr ({ptr.numel() - 1}), got {memory_ptr.numel() - 1}"
            )
        first = self.layers[0]
        edge_index = _edges_for(first.self_attn, first.pattern, ptr, None)
        cross_edge_index = _edges_for(first.multihead_attn, first.cross_pattern, ptr, memory_ptr)
        for layer in self.layers:
            x = layer(x, memory, ptr, memory_ptr, edge_index, cross_edge_index)
        return x if self.norm is None else self.norm(x)


@dataclass
class DecoderState:
    """What incremental decoding keeps between steps (see :meth:`Transformer.start_decoding`)."""

    memory_ptr: Tensor  # [M + 1] layout of the memory of the M sequences being decoded
    memory_kv: list  # per layer: cross-attention keys and values of the memory, [N_s, H, D]
    cache: list  # per layer: self-attention keys and values of earlier positions, [M, t, H, D]

    def reorder(self, index: Tensor) -> None:
        """Keep the sequences ``index`` (beam search): caches follow their hypotheses.

        Only sequences of the same example may be exchanged, since the memory stays in place.
        """
        self.cache = [None if c is None else (c[0][index], c[1][index]) for c in self.cache]


class Transformer(nn.Module):
    r"""Encoder-decoder Transformer whose attention layers are :class:`GraphMultiheadAttention`.

    Arguments and defaults follow ``torch.nn.Transformer`` (always ``batch_first``), plus the
    attention patterns: ``encoder_pattern`` (default ``dense()``) and ``decoder_pattern``
    (default ``causal()``), e.g. ``window(16)`` and ``causal() & window(16)``.

    :meth:`forward` takes padded batches as ``nn.Transformer`` does; :meth:`encode` and
    :meth:`decode` take flat path-graph batches ``(x, ptr)`` without padding.

    Shapes:
        - **forward:** ``src`` :math:`(B, S, d)`, ``tgt`` :math:`(B, T, d)`, padding masks
          :math:`(B, S)` / :math:`(B, T)` (True = padding) -> :math:`(B, T, d)`, zeros at padding
        - **encode:** ``x_src`` :math:`(N_s, d)`, ``ptr_src`` :math:`(B + 1)` -> :math:`(N_s, d)`
        - **decode:** ``x_tgt`` :math:`(N_t, d)`, ``ptr_tgt``, ``memory`` :math:`(N_s, d)`,
          ``ptr_src`` -> :math:`(N_t, d)`
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Union[str, Callable[[Tensor], Tensor]] = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        encoder_pattern: Optional[P.Pattern] = None,
        decoder_pattern: Optional[P.Pattern] = None,
        bias: bool = True,
        attn_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        d_model = P._check_int("d_model", d_model, 1)
        nhead = P._check_int("nhead", nhead, 1)
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        common = dict(
            dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
            layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias, attn_kwargs=attn_kwargs,
        )
        enc = TransformerEncoderLayer(d_model, nhead, pattern=encoder_pattern, **common)
        dec = TransformerDecoderLayer(d_model, nhead, pattern=decoder_pattern, **common)
        self.encoder = TransformerEncoder(enc, num_encoder_layers, nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.decoder = TransformerDecoder(dec, num_decoder_layers, nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.d_model = d_model
        self.nhead = nhead

    @classmethod
    def from_torch(cls, model: nn.Transformer, **kwargs) -> "Transformer":
        """A Transformer with the configuration and weights of a ``torch.nn.Transformer``."""
        if not isinstance(model, nn.Transformer):
            raise TypeError(f"model must be a torch.nn.Transformer, got {type(model).__name__}")
        enc = model.encoder.layers[0]
        new = cls(
            model.d_model, model.nhead, len(model.encoder.layers), len(model.decoder.layers),
            enc.linear1.out_features, enc.dropout.p, enc.activation, enc.norm_first, enc.norm1.eps,
            bias=enc.linear1.bias is not None, **kwargs,
        )
        new.load_state_dict(model.state_dict())
        return new

    def encode(self, x_src: Tensor, ptr_src: Tensor) -> Tensor:
        """Memory ``[N_s, d]`` of the flat source batch ``x_src: [N_s, d]``."""
        return self.encoder(x_src, ptr_src)

    def decode(self, x_tgt: Tensor, ptr_tgt: Tensor, memory: Tensor, ptr_src: Tensor) -> Tensor:
        """Decoder output ``[N_t, d]`` of the flat target batch given the memory."""
        return self.decoder(x_tgt, memory, ptr_tgt, ptr_src)

    def start_decoding(self, memory: Tensor, ptr_src: Tensor) -> DecoderState:
        """State for :meth:`decode_step`: the memory's keys and values, projected once per layer."""
        for layer in self.decoder.layers:
            layer.check_incremental()
        ptr_src = P.check_ptr(ptr_src, "ptr_src").to(memory.device)
        memory_kv = [layer.multihead_attn.project_key_value(memory) for layer in self.decoder.layers]
        return DecoderState(ptr_src, memory_kv, [None] * len(self.decoder.layers))

    def decode_step(self, x: Tensor, state: DecoderState) -> Tensor:
        """Decoder output ``[M, d]`` of the newest position of each sequence, ``x: [M, d]``.

        Each call costs O(t) for step t: earlier positions enter as cached keys and values.
        Gives what :meth:`decode` gives for that position (up to float rounding).
        """
        for i, layer in enumerate(self.decoder.layers):
            x, state.cache[i] = layer.step(x, state.memory_kv[i], state.memory_ptr, state.cache[i])
        return x if self.decoder.norm is None else self.decoder.norm(x)

    def forward_flat(self, x_src: Tensor, ptr_src: Tensor, x_tgt: Tensor, ptr_tgt: Tensor) -> Tensor:
        """The whole model on flat path-graph batches, without padding: ``[N_t, d]``."""
        return self.decode(x_tgt, ptr_tgt, self.encode(x_src, ptr_src), ptr_src)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_key_padding_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Padded batches in and out, as ``nn.Transformer(batch_first=True)`` with a causal ``tgt_mask``.

        Padding positions are never attended; ``memory_key_padding_mask`` defaults to
        ``src_key_padding_mask`` and may only hide more source positions.
        """
        for name, t in (("src", src), ("tgt", tgt)):
            if not isinstance(t, Tensor) or t.dim() != 3 or t.size(-1) != self.d_model:
                raise ValueError(f"{name} must have shape [B, L, d_model={self.d_model}], got {tuple(getattr(t, 'shape', ()))}")
        if src.size(0) != tgt.size(0):
            raise ValueError(f"src and tgt must have the same batch size, got {src.size(0)} and {tgt.size(0)}")
        x_src, ptr_src = to_flat(src, key_padding_mask=src_key_padding_mask)
        x_tgt, ptr_tgt = to_flat(tgt, key_padding_mask=tgt_key_padding_mask)
        memory = self.encode(x_src, ptr_src)
        if memory_key_padding_mask is not None:
            src_pad = torch.zeros_like(memory_key_padding_mask) if src_key_padding_mask is None else src_key_padding_mask
            if memory_key_padding_mask.shape != src.shape[:2]:
                raise ValueError(
                    f"memory_key_padding_mask must have shape {tuple(src.shape[:2])}, got {tuple(memory_key_padding_mask.shape)}"
                )
            if bool((src_pad & ~memory_key_padding_mask).any()):
                raise ValueError("memory_key_padding_mask must hide every position that src_key_padding_mask hides")
            # Re-select the memory rows that stay visible.
            padded = src.new_zeros(src.shape[:2] + (self.d_model,))
            padded[~src_pad] = memory
            memory, ptr_src = to_flat(padded, key_padding_mask=memory_key_padding_mask)
        out = self.decode(x_tgt, ptr_tgt, memory, ptr_src)
        result = tgt.new_zeros(tgt.shape)
        if tgt_key_padding_mask is None:
            return out.view(tgt.shape)
        result[~tgt_key_padding_mask] = out
        return result
