r"""A decoder-only language model whose self-attention is a causal pattern on the path graph.

:class:`CausalLM` stacks pre-norm :class:`~graphattn.nn.TransformerEncoderLayer` blocks over a
``causal`` or ``causal&window:w`` pattern, with a tied output layer. :meth:`CausalLM.generate`
samples with a key/value cache (:class:`~graphattn.nn.KVCache`); under ``causal&window:w`` the cache is a ring
of the last ``w + 1`` positions, so its memory stays flat however long generation runs.
"""
from __future__ import annotations

import math
from functools import partial
from numbers import Integral
from typing import Optional, Union

import torch
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.nn.generation import Redecode, sample, sampler, trim_at_eos
from graphattn.nn.kv_cache import KVCache
from graphattn.nn.positional import RelativePositionBias, positional_encoding
from graphattn.nn.transformer_layers import TransformerEncoderLayer, stack_edges
from graphattn.utils.batch import local_positions, pack_sequences, to_flat
from graphattn.utils.checks import check_choice, check_float, check_int, check_ptr, eager_only

__all__ = ["CausalLM", "POSITIONALS"]

POSITIONALS = ("sinusoidal", "relative")


class CausalLM(nn.Module):
    r"""Decoder-only Transformer language model on flat path-graph batches.

    .. math::
        h^{(0)}_t = \sqrt{d}\, E[x_t] + \mathrm{PE}(t), \qquad
        h^{(l)} = \mathrm{Block}_l(h^{(l-1)}), \qquad
        p(x_{t+1} \mid x_{\le t}) = \operatorname{softmax}(E\, \mathrm{LN}(h^{(L)}_t))

    where each block is self-attention over the causal ``pattern`` (query :math:`t` attends keys
    :math:`s` with :math:`t - w \le s \le t`, :math:`w = \infty` for ``causal``) and a
    feed-forward layer, each with a residual connection and a LayerNorm before it (pre-norm), and
    the output layer shares the embedding matrix :math:`E`. Positions enter as the sinusoidal
    encoding :math:`\mathrm{PE}(t)` of the position on the path, or (``positional="relative"``) as
    a learned per-head bias :math:`b_h(\mathrm{clip}(t - s, 0, m))` on every attention score,
    shared by the layers (T5), which lets a windowed model run past the lengths it was trained on.

    Args:
        vocab_size (int): number of token ids.
        d_model (int, optional): width. (default: 256)
        num_heads (int, optional): attention heads. (default: 4)
        num_layers (int, optional): blocks. (default: 4)
        dim_feedforward (int, optional): hidden width of the feed-forward layers. (default: 1024)
        dropout (float, optional): dropout of embeddings, attention weights and blocks. (default: 0.1)
        pattern (str or Pattern, optional): ``"causal"`` or ``"causal&window:w"`` (any causal band).
            (default: ``"causal"``)
        positional (str, optional): ``"sinusoidal"`` or ``"relative"``. (default: ``"sinusoidal"``)
        max_distance (int, optional): distances told apart by the relative bias. (default: 128)
        norm_first (bool, optional): pre-norm blocks and a final LayerNorm; ``False``: post-norm
            blocks as in "Attention Is All You Need". (default: True)
        activation (str, optional): ``"gelu"`` or ``"relu"``. (default: ``"gelu"``)
        attn_kwargs (dict, optional): more arguments of the attention layers (``backend``, ...).

    Shapes:
        - **forward:** ``tokens [N]`` with ``ptr [B + 1]`` -> logits ``[N, vocab_size]``, or
          padded ``tokens [B, T]`` (``key_padding_mask [B, T]``, True = padding) ->
          ``[B, T, vocab_size]`` (zeros at padding)
        - **generate:** ``prompt [T]``, ``[B, T]`` or a list of ``[T_b]`` -> the same form, each
          prompt followed by up to ``max_new_tokens`` tokens
    """

    def __init__(self, vocab_size: int, d_model: int = 256, num_heads: int = 4, num_layers: int = 4,
                 dim_feedforward: int = 1024, dropout: float = 0.1, pattern: Union[str, P.Pattern] = "causal",
                 positional: str = "sinusoidal", max_distance: int = 128, norm_first: bool = True,
                 activation: str = "gelu", attn_kwargs: Optional[dict] = None):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        self.d_model, self.num_heads = check_int("d_model", d_model, 1), check_int("num_heads", num_heads, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        check_choice("positional", positional, POSITIONALS)
        self.pattern = P.as_pattern(pattern, "pattern", P.causal())
        if not self.pattern.is_causal_band:
            raise ValueError(f"pattern must be a causal band ('causal' or 'causal&window:w'), got {self.pattern!r}")
        self.positional, self.norm_first = positional, norm_first
        self.dropout = check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.embed_dropout = nn.Dropout(dropout)
        self.rel_bias = RelativePositionBias(num_heads, max_distance) if positional == "relative" else None
        self.layers = nn.ModuleList([
            TransformerEncoderLayer(d_model, num_heads, dim_feedforward, dropout, activation, norm_first=norm_first,
                                    pattern=self.pattern, attn_kwargs=attn_kwargs)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model) if norm_first else None
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied: one matrix reads and writes tokens
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Unit-scale token embeddings after the sqrt(d) factor, like the sinusoids they are added to.
        nn.init.normal_(self.embed.weight, std=self.d_model ** -0.5)
        for layer in self.layers:
            layer.reset_parameters()
        for module in (self.rel_bias, self.norm):
            if module is not None:
                module.reset_parameters()

    @property
    def window(self) -> Optional[int]:
        """How far back a query attends (``w`` of ``causal&window:w``), or None for ``causal``."""
        return self.pattern.as_band().left

    # ------------------------------------------------------------------------- forward

    def _embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if eager_only() and tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"tokens must be ids in [0, {self.vocab_size}), got values in "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        x = self.embed(tokens) * math.sqrt(self.d_model)
        if self.rel_bias is None:
            x = x + positional_encoding(positions, self.d_model, dtype=x.dtype, device=x.device)
        return self.embed_dropout(x)

    def _attention_inputs(self, ptr: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """``(edge_index, attn_bias)`` shared by the layers: the pattern's edges when the attention
        runs on the edges backend, and the relative bias ``[E, H]`` on them (canonical order)."""
        edge_index = stack_edges(self.layers[0].self_attn, self.pattern, ptr, None)
        if self.rel_bias is None:
            return edge_index, None
        edges = edge_index if edge_index is not None else self.pattern.edge_index(ptr)
        return edge_index, self.rel_bias(edges, ptr)

    def hidden(self, tokens: Tensor, ptr: Tensor, cache: Optional[KVCache] = None) -> Tensor:
        """Final hidden states ``[N, d_model]`` of flat token ids ``tokens [N]`` laid out by ``ptr``.

        With ``cache``, each layer's keys and values of the positions the cache can hold (the
        last ``cache.size`` of each sequence) are written into it.
        """
        x = self._embed(tokens, local_positions(ptr))
        edge_index, bias = self._attention_inputs(ptr)
        for i, layer in enumerate(self.layers):
            x = layer(x, ptr, edge_index, bias) if cache is None else layer.prefill(x, ptr, cache, i, edge_index, bias)
        return x if self.norm is None else self.norm(x)

    def forward_flat(self, tokens: Tensor, ptr: Tensor) -> Tensor:
        """Logits ``[N, vocab_size]`` of the next token at every position of a flat batch."""
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.long or tokens.dim() != 1:
            raise TypeError(f"tokens must be flat token ids, a LongTensor [N], got "
                            f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
        ptr = check_ptr(ptr, "ptr", tokens.numel()).to(tokens.device)
        return self.lm_head(self.hidden(tokens, ptr))

    def forward(self, tokens: Tensor, ptr: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """Flat ``tokens [N]`` (+ ``ptr``, default one sequence) -> ``[N, V]``, or padded
        ``tokens [B, T]`` (+ ``key_padding_mask``, True = padding) -> ``[B, T, V]``."""
        if isinstance(tokens, Tensor) and tokens.dim() == 2:
            if ptr is not None:
                raise ValueError("padded tokens [B, T] take key_padding_mask, not ptr")
            flat, ptr = to_flat(tokens, key_padding_mask=key_padding_mask)
            out = self.forward_flat(flat, ptr)
            if key_padding_mask is None:
                return out.view(*tokens.shape, -1)
            padded = out.new_zeros(*tokens.shape, self.vocab_size)
            padded[~key_padding_mask] = out
            return padded
        if key_padding_mask is not None:
            raise ValueError("key_padding_mask goes with padded tokens [B, T]; flat tokens take ptr")
        if ptr is None and isinstance(tokens, Tensor):
            ptr = torch.tensor([0, tokens.numel()], device=tokens.device)
        return self.forward_flat(tokens, ptr)

    # ------------------------------------------------------------------------- incremental decoding

    def init_cache(self, batch_size: int, capacity: int, rolling: bool = True) -> KVCache:
        """An empty cache for ``batch_size`` sequences of at most ``capacity`` positions.

        With ``rolling`` and a windowed pattern it keeps ``w + 1`` slots (all that the window
        reaches); otherwise ``capacity`` slots.
        """
        return KVCache.empty(self.num_layers, batch_size, capacity, self.num_heads, self.d_model // self.num_heads,
                             self.window, self.embed.weight, rolling)

    def decode_step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """Logits ``[M, V]`` after appending ``tokens [M]`` (one per sequence) to the cached ones.

        Costs O(cache size) per sequence, and gives what :meth:`forward` gives at that position
        (up to float rounding).
        """
        pos = cache.length.clone()
        cache.check_room(int(pos.max()) + 1)
        x = self._embed(tokens, pos)
        for i, layer in enumerate(self.layers):
            x = layer.step(x, cache, i, pos, self.rel_bias)
        cache.length += 1
        return self.lm_head(x if self.norm is None else self.norm(x))

    def prefill(self, tokens: Tensor, ptr: Tensor, cache: KVCache) -> Tensor:
        """Run the prompts (flat ``tokens [N]``, ``ptr [M + 1]``, each non-empty) through the model,
        fill the cache with the keys and values it will need, and return the logits ``[M, V]``
        of each prompt's last position."""
        ptr = check_ptr(ptr, "ptr", tokens.numel()).to(tokens.device)
        lengths = ptr.diff()
        if lengths.numel() != cache.length.numel() or bool((lengths < 1).any()):
            raise ValueError(f"need one non-empty prompt per cached sequence ({cache.length.numel()}), "
                             f"got lengths {lengths.tolist()}")
        cache.check_room(int(lengths.max()))
        hidden = self.hidden(tokens, ptr, cache)
        cache.length = lengths.clone()
        return self.lm_head(hidden[ptr[1:] - 1])

    @torch.no_grad()
    def generate(self, prompt, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, seed: Optional[int] = None, eos_id: Optional[int] = None,
                 use_cache: bool = True, rolling_cache: bool = True):
        r"""Continue ``prompt`` by up to ``max_new_tokens`` tokens (the loop is
        :func:`graphattn.nn.generation.sample`, shared with the other models).

        Args:
            prompt (LongTensor or list): ``[T]``, ``[B, T]`` or a list of ``[T_b]`` (ragged), each
                at least one token.
            max_new_tokens (int): tokens to add.
            temperature (float, optional): ``0`` is greedy; otherwise the softmax temperature.
                (default: 1.0)
            top_k (int, optional): sample among the ``top_k`` most probable tokens only.
            top_p (float, optional): nucleus sampling: among the fewest tokens whose probability
                reaches ``top_p``.
            seed (int, optional): seed of a generator local to this call (torch's global RNG
                is neither used nor changed). (default: the global RNG)
            eos_id (int, optional): a sequence that emits it stops; it is kept, nothing follows.
            use_cache (bool, optional): cached keys and values (O(t) a step) instead of running
                the whole sequence again each step (O(t^2)); the same tokens. (default: True)
            rolling_cache (bool, optional): under ``causal&window:w`` keep only the last ``w + 1``
                positions' keys and values, instead of all. (default: True)

        Returns:
            the prompts with their continuations, in the form of ``prompt`` (``[B, T + n]`` pads
            sequences that stopped at ``eos_id`` with it).

        Put the model in eval mode first for deterministic output (dropout).
        """
        prompts, form = _as_prompts(prompt, self.embed.weight.device)
        check_int("max_new_tokens", max_new_tokens, 0)
        choose = sampler(temperature, top_k, top_p, seed, self.embed.weight.device)  # checks the options
        if eos_id is not None and not 0 <= check_int("eos_id", eos_id, 0) < self.vocab_size:
            raise ValueError(f"eos_id must be a token id in [0, {self.vocab_size}), got {eos_id}")
        for i, row in enumerate(prompts):
            if eager_only() and row.numel() and not 0 <= int(row.min()) <= int(row.max()) < self.vocab_size:
                raise ValueError(f"prompt holds token ids outside [0, {self.vocab_size}) in sequence {i}: "
                                 f"{int(row.min())} to {int(row.max())}")
        seqs = [p.tolist() for p in prompts]
        if max_new_tokens > 0:
            flat, ptr = pack_sequences(prompts)
            if use_cache:
                cache = self.init_cache(len(prompts), max(len(s) for s in seqs) + max_new_tokens, rolling_cache)
                first, step = self.prefill(flat, ptr, cache), partial(self.decode_step, cache=cache)
            else:
                redecode = Redecode(lambda tokens, ptr: self.forward_flat(tokens, ptr)[ptr[1:] - 1], flat, ptr)
                first, step = redecode.first(), redecode.step
            tokens, _ = sample(step, first, max_new_tokens, choose, eos_id)
            seqs = [s + new for s, new in zip(seqs, trim_at_eos(tokens, eos_id))]
        return _as_form(seqs, form, eos_id)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.vocab_size}, d_model={self.d_model}, num_heads={self.num_heads}, "
                f"num_layers={self.num_layers}, pattern={self.pattern!r}, positional={self.positional!r})")


def _as_prompts(prompt, device) -> tuple[list, str]:
    """Prompts as a list of 1-D LongTensors, and the form to give the output back in."""
    if isinstance(prompt, Tensor):
        if prompt.dtype != torch.long or prompt.dim() not in (1, 2) or prompt.size(-1) < 1:
            raise ValueError(f"prompt must be token ids [T] or [B, T] (LongTensor, T >= 1), got "
                             f"{prompt.dtype} {tuple(prompt.shape)}")
        form = "1d" if prompt.dim() == 1 else "2d"
        rows = [prompt] if prompt.dim() == 1 else list(prompt)
    elif isinstance(prompt, (list, tuple)) and prompt:
        rows, form = [_as_ids(p, i) for i, p in enumerate(prompt)], "list"
        if any(r.dim() != 1 or r.numel() < 1 for r in rows):
            raise ValueError("prompt as a list must hold non-empty 1-D token id sequences")
    else:
        raise TypeError(f"prompt must be a LongTensor [T] or [B, T], or a list of them, got {type(prompt).__name__}")
    return [r.to(device) for r in rows], form


def _as_ids(row, i: int) -> Tensor:
    """One prompt of a list as a LongTensor; floats or text are refused, not cast."""
    if isinstance(row, Tensor):
        if row.dtype.is_floating_point or row.dtype.is_complex or row.dtype == torch.bool:
            raise TypeError(f"prompt[{i}] must hold integer token ids, got dtype {row.dtype}")
        return row.long()
    values = list(row) if isinstance(row, (list, tuple)) else None
    if values is None or any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        raise TypeError(f"prompt[{i}] must be a LongTensor [T] or a list of int token ids, got {row!r:.80}")
    return torch.tensor(values, dtype=torch.long)


def _as_form(seqs: list, form: str, eos_id: Optional[int]):
    if form == "list":
        return [torch.tensor(s, dtype=torch.long) for s in seqs]
    if form == "1d":
        return torch.tensor(seqs[0], dtype=torch.long)
    width = max(len(s) for s in seqs)
    fill = 0 if eos_id is None else eos_id
    return torch.tensor([s + [fill] * (width - len(s)) for s in seqs], dtype=torch.long)
