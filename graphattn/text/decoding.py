r"""Greedy and beam-search decoding of a :class:`~graphattn.text.model.Seq2Seq` on ragged batches.

Both decode a flat batch of sources (``src: [N_s]``, ``ptr_src: [B + 1]``) in lockstep and stop
when every sequence has emitted EOS (or after ``max_len`` tokens). The loops are those of
:mod:`graphattn.nn.generation`, which the language model samples with too; this module gives them
the translation model's step. With ``use_cache=True`` each step feeds only the newest token and
reuses the keys and values of earlier positions (:meth:`Transformer.decode_step` on a
:class:`~graphattn.nn.KVCache`, a ring of ``w + 1`` positions under ``causal&window:w``), so step
``t`` costs O(t) instead of O(t^2); without cache each step re-decodes the whole prefix, which is the
reference the cached path must equal.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphattn.nn.generation import Redecode, beam, sample, sampler, trim_at_eos
from graphattn.text.model import Seq2Seq
from graphattn.utils.batch import lengths_to_ptr
from graphattn.utils.checks import check_int, check_ptr

__all__ = ["Decoded", "greedy_decode", "beam_search"]


class Decoded(NamedTuple):
    tokens: list  # B lists of token ids, without BOS, up to and including EOS when emitted
    scores: Tensor  # [B] sum of the log-probabilities of the tokens (beam: before length penalty)


class _Incremental:
    """The step of a :class:`Seq2Seq` with its decoder's cache: the newest token in, the
    log-probabilities of the next out (any ``transformer`` with ``start_decoding``/``decode_step``)."""

    def __init__(self, model: Seq2Seq, memory: Tensor, ptr_src: Tensor, capacity: int):
        self.model, self.position = model, 0
        self.state = model.transformer.start_decoding(memory, ptr_src, capacity)

    def step(self, tokens: Tensor) -> Tensor:
        x = self.model.embed_step(tokens, self.position)
        self.position += 1
        return self.model.log_probs(self.model.transformer.decode_step(x, self.state))


def _start(model: Seq2Seq, memory: Tensor, ptr_src: Tensor, use_cache: bool, max_len: int):
    """``(log_probs [M, V] after BOS, step, reorder)`` of ``M = len(ptr_src) - 1`` sequences."""
    bos = torch.full((ptr_src.numel() - 1,), model.bos_id, dtype=torch.long, device=memory.device)
    if use_cache:
        stepper = _Incremental(model, memory, ptr_src, max_len)
        return stepper.step(bos), stepper.step, stepper.state.reorder

    def run(tgt: Tensor, ptr_tgt: Tensor) -> Tensor:
        return model.log_probs(model.decode(tgt, ptr_tgt, memory, ptr_src)[ptr_tgt[1:] - 1])

    redecode = Redecode(run, bos, torch.arange(bos.numel() + 1, device=bos.device))
    return redecode.first(), redecode.step, redecode.reorder


def _check(model, src, ptr_src, max_len):
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a Seq2Seq, got {type(model).__name__}")
    ptr_src = check_ptr(ptr_src, "ptr_src").to(src.device)
    if int(ptr_src[-1]) != src.numel():
        raise ValueError(f"ptr_src[-1] ({int(ptr_src[-1])}) must equal the number of source tokens ({src.numel()})")
    check_int("max_len", max_len, 1)
    return ptr_src


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src: Tensor, ptr_src: Tensor, max_len: int = 64, use_cache: bool = True) -> Decoded:
    """The most probable next token at every step, for a batch of ragged sources.

    Args:
        model (Seq2Seq): the model (put it in eval mode for deterministic output).
        src (LongTensor): flat source token ids ``[N_s]``.
        ptr_src (LongTensor): ``[B + 1]``.
        max_len (int): the most tokens generated per sequence (EOS included).
        use_cache (bool): incremental decoding with cached keys and values.
    """
    ptr_src = _check(model, src, ptr_src, max_len)
    memory = model.encode(src, ptr_src)
    first, step, _ = _start(model, memory, ptr_src, use_cache, max_len)
    tokens, scores = sample(step, first, max_len, sampler(0.0), model.eos_id, model.pad_id)
    return Decoded(trim_at_eos(tokens, model.eos_id), scores)


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    ptr_src: Tensor,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    max_len: int = 64,
    use_cache: bool = True,
) -> Decoded:
    r"""Beam search with the GNMT length penalty :math:`((5 + |y|) / 6)^\alpha`
    (:func:`graphattn.nn.generation.beam`).

    Keeps ``beam_size`` hypotheses per source; a hypothesis that emitted EOS keeps its score
    and competes with the open ones by its length-normalised score. ``beam_size=1`` is greedy.

    Returns the best hypothesis per source and its (unnormalised) log-probability.
    """
    ptr_src = _check(model, src, ptr_src, max_len)
    check_int("beam_size", beam_size, 1)
    batch, k, device = ptr_src.numel() - 1, beam_size, src.device
    memory = model.encode(src, ptr_src)
    # Every source appears k times, each copy with its own memory rows.
    lengths = ptr_src.diff().repeat_interleave(k)
    rows = torch.repeat_interleave(torch.arange(batch, device=device), k)
    memory_ptr = lengths_to_ptr(lengths)
    total = int(memory_ptr[-1])
    # Row r of copy c of source b is memory row ptr_src[b] + r.
    index = torch.arange(total, device=device) + torch.repeat_interleave(ptr_src[rows] - memory_ptr[:-1], lengths, output_size=total)
    first, step, reorder = _start(model, memory[index], memory_ptr, use_cache, max_len)
    tokens, scores = beam(step, reorder, first, k, max_len, model.eos_id, model.pad_id, length_penalty, model.bos_id)
    return Decoded(trim_at_eos(tokens, model.eos_id), scores)
