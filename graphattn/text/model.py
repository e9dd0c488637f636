r"""Sequence-to-sequence model: token embeddings, positional encoding, the graph Transformer
and a generator over the target vocabulary."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.nn import Transformer, positional_encoding
from graphattn.utils.batch import local_positions, to_flat, to_padded
from graphattn.utils.checks import check_int, eager_only

__all__ = ["Seq2Seq", "TorchSeq2Seq", "TorchTransformer"]


class Seq2Seq(nn.Module):
    r"""Encoder-decoder translation model whose attention layers are graph attention.

    .. math::
        h^{(0)}_t = \sqrt{d}\, E[y_t] + \mathrm{PE}(t), \qquad
        p(y_{t+1} \mid y_{\le t}, x) = \operatorname{softmax}(W_g h^{(L)}_t + b_g)

    where :math:`\mathrm{PE}` is the sinusoidal encoding of the position on the path graph.
    Sequences travel as flat path-graph batches (token ids ``[N]`` with ``ptr [B + 1]``), so a
    batch carries no padding; :meth:`forward` also accepts padded ``[B, L]`` batches.

    Args:
        src_vocab (int): source vocabulary size.
        tgt_vocab (int): target vocabulary size.
        d_model (int, optional): model width. (default: 256)
        num_heads (int, optional): attention heads. (default: 4)
        num_encoder_layers, num_decoder_layers (int, optional): depth. (default: 3, 3)
        dim_feedforward (int, optional): feed-forward width. (default: 1024)
        dropout (float, optional): dropout everywhere (embeddings too). (default: 0.1)
        activation (str, optional): ``"relu"`` or ``"gelu"``. (default: ``"relu"``)
        norm_first (bool, optional): pre-norm layers. (default: False)
        encoder_pattern, decoder_pattern (Pattern, optional): attention patterns
            (default: ``dense()`` and ``causal()``).
        tie_embeddings (bool, optional): the generator shares the target embedding matrix.
            (default: False)
        pad_id, bos_id, eos_id (int, optional): special token ids. (default: 0, 1, 2)
        attn_kwargs (dict, optional): more arguments of the attention layers.

    Shapes:
        - **forward_flat:** ``src [N_s]``, ``ptr_src [B + 1]``, ``tgt [N_t]``, ``ptr_tgt [B + 1]``
          -> log-probabilities ``[N_t, tgt_vocab]``
        - **forward:** ``src [B, S]``, ``tgt [B, T]`` -> ``[B, T, tgt_vocab]``
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 256,
        num_heads: int = 4,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        encoder_pattern: Optional[P.Pattern] = None,
        decoder_pattern: Optional[P.Pattern] = None,
        tie_embeddings: bool = False,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        attn_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.src_vocab = check_int("src_vocab", src_vocab, 1)
        self.tgt_vocab = check_int("tgt_vocab", tgt_vocab, 1)
        for name, token in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= check_int(name, token, 0) < min(src_vocab, tgt_vocab):
                raise ValueError(f"{name} ({token}) must be a valid id of both vocabularies")
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        # Checked here so that the error names this class's argument, not the inner Transformer's nhead.
        if d_model % check_int("num_heads", num_heads, 1):
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.transformer = Transformer(
            d_model, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout,
            activation, norm_first, encoder_pattern=encoder_pattern, decoder_pattern=decoder_pattern,
            attn_kwargs=attn_kwargs,
        )
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab, d_model, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model, padding_idx=pad_id)
        self.generator = nn.Linear(d_model, tgt_vocab)
        self.tie_embeddings = tie_embeddings
        if tie_embeddings:
            self.generator.weight = self.tgt_embed.weight
        self.embed_dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier for every matrix, as the Annotated Transformer does; vectors keep their init.
        for module in self.transformer.modules():
            if hasattr(module, "reset_parameters") and module is not self.transformer:
                module.reset_parameters()
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.src_embed.weight[self.pad_id].zero_()
            self.tgt_embed.weight[self.pad_id].zero_()
        nn.init.zeros_(self.generator.bias)

    # ------------------------------------------------------------------------- pieces

    def _embed(self, embedding: nn.Embedding, tokens: Tensor, positions: Tensor) -> Tensor:
        x = embedding(tokens) * math.sqrt(self.d_model)
        x = x + positional_encoding(positions, self.d_model, dtype=x.dtype, device=x.device)
        return self.embed_dropout(x)

    def encode(self, src: Tensor, ptr_src: Tensor) -> Tensor:
        """Memory ``[N_s, d_model]`` of flat source token ids ``src: [N_s]``."""
        self._check_tokens(src, "src", self.src_vocab)
        return self.transformer.encode(self._embed(self.src_embed, src, local_positions(ptr_src, src.numel())), ptr_src)

    def decode(self, tgt: Tensor, ptr_tgt: Tensor, memory: Tensor, ptr_src: Tensor) -> Tensor:
        """Decoder states ``[N_t, d_model]`` of flat target token ids ``tgt: [N_t]``."""
        self._check_tokens(tgt, "tgt", self.tgt_vocab)
        x = self._embed(self.tgt_embed, tgt, local_positions(ptr_tgt, tgt.numel()))
        return self.transformer.decode(x, ptr_tgt, memory, ptr_src)

    def log_probs(self, hidden: Tensor) -> Tensor:
        """Generator: log-probabilities ``[..., tgt_vocab]`` of decoder states ``[..., d_model]``."""
        return F.log_softmax(self.generator(hidden), dim=-1)

    def embed_step(self, tokens: Tensor, position: int) -> Tensor:
        """Decoder input ``[M, d_model]`` of one token per sequence at ``position``."""
        return self._embed(self.tgt_embed, tokens, torch.full_like(tokens, position))

    # ------------------------------------------------------------------------- forward

    def forward_flat(self, src: Tensor, ptr_src: Tensor, tgt: Tensor, ptr_tgt: Tensor) -> Tensor:
        """Log-probabilities ``[N_t, tgt_vocab]`` of the next token at every target position."""
        memory = self.encode(src, ptr_src)
        return self.log_probs(self.decode(tgt, ptr_tgt, memory, ptr_src))

    def forward(self, src: Tensor, tgt: Tensor, src_key_padding_mask: Optional[Tensor] = None,
                tgt_key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Padded token batches ``src [B, S]``, ``tgt [B, T]`` -> ``[B, T, tgt_vocab]``.

        Masks (True = padding) default to ``token == pad_id``; padded rows are zeros.
        """
        for name, t in (("src", src), ("tgt", tgt)):
            if not isinstance(t, Tensor) or t.dim() != 2:
                raise ValueError(f"{name} must be token ids of shape [B, L], got {getattr(t, 'shape', type(t))}")
        if src.size(0) != tgt.size(0):
            raise ValueError(f"src and tgt must have the same batch size, got {src.size(0)} and {tgt.size(0)}")
        src_mask = src == self.pad_id if src_key_padding_mask is None else src_key_padding_mask
        tgt_mask = tgt == self.pad_id if tgt_key_padding_mask is None else tgt_key_padding_mask
        src_flat, ptr_src = to_flat(src, key_padding_mask=src_mask)
        tgt_flat, ptr_tgt = to_flat(tgt, key_padding_mask=tgt_mask)
        out = self.forward_flat(src_flat, ptr_src, tgt_flat, ptr_tgt)
        padded = out.new_zeros(tgt.shape + (self.tgt_vocab,))
        padded[~tgt_mask] = out
        return padded

    @staticmethod
    def _check_tokens(tokens: Tensor, name: str, vocab: int) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.long or tokens.dim() != 1:
            raise TypeError(f"{name} must be flat token ids, a LongTensor [N], got {getattr(tokens, 'dtype', type(tokens))}")
        if eager_only() and tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"{name} has token ids outside [0, {vocab})")

    def __repr__(self) -> str:
        t = self.transformer
        return (f"{type(self).__name__}(src_vocab={self.src_vocab}, tgt_vocab={self.tgt_vocab}, "
                f"d_model={self.d_model}, num_heads={t.nhead}, layers={t.encoder.num_layers}+{t.decoder.num_layers}, "
                f"encoder_pattern={t.encoder.layers[0].pattern!r}, decoder_pattern={t.decoder.layers[0].pattern!r})")


# ----------------------------------------------------------------------------- reference


def band_mask(pattern: P.Pattern, length: int, device=None) -> Optional[Tensor]:
    """``[length, length]`` BoolTensor of a band pattern, **True = blocked** (torch's polarity);
    :obj:`None` for ``dense()``. Raises ``ValueError`` for a pattern that is not a band."""
    band = pattern.as_band()
    if band is None or pattern.bipartite:
        raise ValueError(f"the torch reference computes band patterns only (dense, causal, window), got {pattern!r}")
    if band.is_dense:
        return None
    pos = torch.arange(length, device=device)
    offset = pos.unsqueeze(1) - pos.unsqueeze(0)  # (T, T): query i - key j
    allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    if band.left is not None:
        allowed &= offset <= band.left
    if band.right is not None:
        allowed &= -offset <= band.right
    return ~allowed


@dataclass
class _PrefixState:
    """Decoding state of :class:`TorchTransformer`: the padded memory and the inputs so far."""

    memory: Tensor  # [M, S, d] padded memory
    memory_mask: Tensor  # [M, S] True = padding
    inputs: Optional[Tensor] = None  # [M, t, d] decoder inputs of earlier positions

    def reorder(self, index: Tensor) -> None:
        """Keep the sequences ``index`` (beam search)."""
        self.memory, self.memory_mask = self.memory[index], self.memory_mask[index]
        self.inputs = None if self.inputs is None else self.inputs[index]


class TorchTransformer(nn.Module):
    r"""``torch.nn.TransformerEncoder``/``Decoder`` behind the flat-batch interface of
    :class:`~graphattn.nn.Transformer`: the reference the graph layers are measured against.

    Flat batches are padded at the boundary (:func:`to_padded`) and band patterns become
    ``attn_mask`` matrices. :meth:`decode_step` keeps no key/value cache: it re-decodes the
    prefix (O(t^2) per sequence), which is what ``nn.TransformerDecoder`` offers. Its layers have no
    cache and no step: decoding incrementally would mean writing their forward again from their
    parts, a second copy of the very layers this class is the reference for. Behind the same step
    interface as :class:`~graphattn.nn.Transformer` (``start_decoding``, ``decode_step``,
    ``reorder``), it decodes with the same greedy and beam-search code.

    Args: as :class:`~graphattn.nn.Transformer` (patterns must be bands).

    Shapes:
        - **encode:** ``x_src`` :math:`(N_s, d)`, ``ptr_src`` :math:`(B + 1)` -> :math:`(N_s, d)`
        - **decode:** ``x_tgt`` :math:`(N_t, d)`, ``ptr_tgt``, ``memory`` :math:`(N_s, d)`,
          ``ptr_src`` -> :math:`(N_t, d)`
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", norm_first: bool = False,
                 encoder_pattern: Optional[P.Pattern] = None, decoder_pattern: Optional[P.Pattern] = None):
        super().__init__()
        self.encoder_pattern = P.as_pattern(encoder_pattern, "encoder_pattern", P.dense())
        self.decoder_pattern = P.as_pattern(decoder_pattern, "decoder_pattern", P.causal())
        for pattern in (self.encoder_pattern, self.decoder_pattern):
            band_mask(pattern, 1)  # raises for patterns the reference cannot compute
        common = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                      batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead, **common), num_encoder_layers, nn.LayerNorm(d_model),
            enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d_model, nhead, **common), num_decoder_layers, nn.LayerNorm(d_model))
        self.d_model, self.nhead = d_model, nhead

    def encode(self, x_src: Tensor, ptr_src: Tensor) -> Tensor:
        """Memory ``[N_s, d]`` of the flat source batch ``x_src: [N_s, d]``."""
        x, pad = to_padded(x_src, ptr_src)
        mask = band_mask(self.encoder_pattern, x.size(1), x.device)
        return self.encoder(x, mask=mask, src_key_padding_mask=pad)[~pad]

    def _decode_padded(self, x: Tensor, pad: Optional[Tensor], memory: Tensor, memory_mask: Tensor) -> Tensor:
        mask = band_mask(self.decoder_pattern, x.size(1), x.device)
        return self.decoder(x, memory, tgt_mask=mask, tgt_key_padding_mask=pad,
                            memory_key_padding_mask=memory_mask)

    def decode(self, x_tgt: Tensor, ptr_tgt: Tensor, memory: Tensor, ptr_src: Tensor) -> Tensor:
        """Decoder output ``[N_t, d]`` of the flat target batch given the memory ``[N_s, d]``."""
        x, pad = to_padded(x_tgt, ptr_tgt)
        mem, mem_pad = to_padded(memory, ptr_src)
        return self._decode_padded(x, pad, mem, mem_pad)[~pad]

    def start_decoding(self, memory: Tensor, ptr_src: Tensor, capacity: Optional[int] = None) -> _PrefixState:
        """State for :meth:`decode_step` (the padded memory); the step interface of
        :meth:`graphattn.nn.Transformer.start_decoding`, so the same generation code decodes both.
        ``capacity`` is not needed: the prefix grows as it goes."""
        return _PrefixState(*to_padded(memory, ptr_src))

    def decode_step(self, x: Tensor, state: _PrefixState) -> Tensor:
        """Decoder output ``[M, d]`` of the newest position, ``x: [M, d]``; re-decodes the prefix."""
        step = x.unsqueeze(1)  # (M, 1, d)
        state.inputs = step if state.inputs is None else torch.cat([state.inputs, step], 1)
        return self._decode_padded(state.inputs, None, state.memory, state.memory_mask)[:, -1]


class TorchSeq2Seq(Seq2Seq):
    """:class:`Seq2Seq` with ``torch.nn.Transformer`` layers in place of the graph layers.

    The same embeddings, positional encoding, generator, initialisation and decoding interface
    (``greedy_decode``/``beam_search`` work on it), so training either one measures the
    attention layers alone. Patterns must be bands (``dense``, ``causal``, ``window:W``, ...).
    Arguments as :class:`Seq2Seq`, without ``attn_kwargs``.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 256, num_heads: int = 4,
                 num_encoder_layers: int = 3, num_decoder_layers: int = 3, dim_feedforward: int = 1024,
                 dropout: float = 0.1, activation: str = "relu", norm_first: bool = False,
                 encoder_pattern: Optional[P.Pattern] = None, decoder_pattern: Optional[P.Pattern] = None,
                 tie_embeddings: bool = False, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        # num_*_layers=1 for the graph stack that is replaced right away.
        super().__init__(src_vocab, tgt_vocab, d_model, num_heads, 1, 1, dim_feedforward, dropout, activation,
                         norm_first, encoder_pattern, decoder_pattern, tie_embeddings, pad_id, bos_id, eos_id)
        self.transformer = TorchTransformer(d_model, num_heads, num_encoder_layers, num_decoder_layers,
                                            dim_feedforward, dropout, activation, norm_first,
                                            encoder_pattern, decoder_pattern)
        self.reset_parameters()

    def __repr__(self) -> str:
        t = self.transformer
        return (f"{type(self).__name__}(src_vocab={self.src_vocab}, tgt_vocab={self.tgt_vocab}, "
                f"d_model={self.d_model}, num_heads={t.nhead}, layers={t.encoder.num_layers}+{t.decoder.num_layers}, "
                f"encoder_pattern={t.encoder_pattern!r}, decoder_pattern={t.decoder_pattern!r})")
