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
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.nn.kv_cache import KVCache
from graphattn.nn.transformer_layers import TransformerDecoderLayer, TransformerEncoderLayer, stack_edges
from graphattn.utils.batch import to_flat
from graphattn.utils.checks import check_int, check_ptr

__all__ = ["TransformerEncoder", "TransformerDecoder", "Transformer"]


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` copies of ``encoder_layer`` and an optional final LayerNorm.

    Shapes: ``x: (N, d)``, ``ptr: (B + 1)`` -> ``(N, d)``.
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        if not isinstance(encoder_layer, TransformerEncoderLayer):
            raise TypeError(f"encoder_layer must be a TransformerEncoderLayer, got {type(encoder_layer).__name__}")
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(check_int("num_layers", num_layers, 1))])
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
        ptr = check_ptr(ptr).to(x.device)
        first = self.layers[0]
        # Every layer shares the pattern: build its edges once, if a layer needs them at all.
        edge_index = stack_edges(first.self_attn, first.pattern, ptr, None)
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
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(check_int("num_layers", num_layers, 1))])
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
        ptr = check_ptr(ptr).to(x.device)
        memory_ptr = check_ptr(memory_ptr, "memory_ptr").to(x.device)
        if memory_ptr.numel() != ptr.numel():
            raise ValueError(
                f"memory_ptr must describe as many examples as ptr ({ptr.numel() - 1}), got {memory_ptr.numel() - 1}"
            )
        first = self.layers[0]
        edge_index = stack_edges(first.self_attn, first.pattern, ptr, None)
        cross_edge_index = stack_edges(first.multihead_attn, first.cross_pattern, ptr, memory_ptr)
        for layer in self.layers:
            x = layer(x, memory, ptr, memory_ptr, edge_index, cross_edge_index)
        return x if self.norm is None else self.norm(x)


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
        d_model = check_int("d_model", d_model, 1)
        nhead = check_int("nhead", nhead, 1)
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        common = dict(
            dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
            layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias, attn_kwargs=attn_kwargs,
        )
        encoder_pattern = P.as_pattern(encoder_pattern, "encoder_pattern", P.dense())
        decoder_pattern = P.as_pattern(decoder_pattern, "decoder_pattern", P.causal())
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

    def start_decoding(self, memory: Tensor, ptr_src: Tensor, capacity: int) -> KVCache:
        """A cache for :meth:`decode_step` of ``M`` target sequences of up to ``capacity`` positions:
        each decoder layer's cross-attention keys and values of the memory ``[N_s, d]`` (laid out
        by ``ptr_src [M + 1]``), projected once, and room for its self-attention keys and values,
        a ring of ``w + 1`` positions under ``causal&window:w``."""
        for layer in self.decoder.layers:
            layer.check_incremental()
        ptr_src = check_ptr(ptr_src, "ptr_src").to(memory.device)
        layers = self.decoder.layers
        attn = layers[0].self_attn
        cache = KVCache.empty(len(layers), ptr_src.numel() - 1, capacity, attn.num_heads, attn.head_dim,
                              layers[0].pattern.as_band().left, memory)
        cache.memory = [layer.multihead_attn.project_key_value(memory) for layer in layers]
        cache.memory_ptr = ptr_src
        return cache

    def decode_step(self, x: Tensor, cache: KVCache) -> Tensor:
        """Decoder output ``[M, d]`` of the newest position of each sequence, ``x: [M, d]``.

        Each call costs O(t) for step t (O(w) under ``causal&window:w``): earlier positions enter as
        cached keys and values. Gives what :meth:`decode` gives for that position (up to float
        rounding).
        """
        positions = cache.length.clone()
        cache.check_room(int(positions.max()) + 1)
        for i, layer in enumerate(self.decoder.layers):
            x = layer.step(x, cache, i, positions)
        cache.length += 1
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
