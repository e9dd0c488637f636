r"""Greedy and beam-search decoding of a :class:`~graphattn.text.model.Seq2Seq` on ragged batches.

Both decode a flat batch of sources (``src: [N_s]``, ``ptr_src: [B + 1]``) in lockstep and stop
when every sequence has emitted EOS (or after ``max_len`` tokens). With ``use_cache=True`` each
step feeds only the newest token and reuses the keys and values of earlier positions
(:meth:`Transformer.decode_step`), so step ``t`` costs O(t) instead of O(t^2); without cache
each step re-decodes the whole prefix, which is the reference the cached path must equal.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphattn.text.model import Seq2Seq
from graphattn.utils.batch import lengths_to_ptr
from graphattn.utils.checks import check_int, check_ptr

__all__ = ["Decoded", "greedy_decode", "beam_search"]


class Decoded(NamedTuple):
    tokens: list  # B lists of token ids, without BOS, up to and including EOS when emitted
    scores: Tensor  # [B] sum of the log-probabilities of the tokens (beam: before length penalty)


class _Stepper:
    """Log-probabilities of the next token for M sequences, cached or by re-decoding the prefix."""

    def __init__(self, model: Seq2Seq, memory: Tensor, ptr_src: Tensor, use_cache: bool):
        self.model, self.memory, self.ptr_src, self.use_cache = model, memory, ptr_src, use_cache
        self.state = model.transformer.start_decoding(memory, ptr_src) if use_cache else None

    def __call__(self, prefix: Tensor) -> Tensor:
        """``prefix: [M, t + 1]`` tokens so far (BOS first) -> ``[M, V]``."""
        num, length = prefix.shape
        if self.use_cache:
            hidden = self.model.transformer.decode_step(self.model.embed_step(prefix[:, -1], length - 1), self.state)
        else:
            ptr_tgt = torch.arange(num + 1, device=prefix.device) * length
            hidden = self.model.decode(prefix.reshape(-1), ptr_tgt, self.memory, self.ptr_src)
            hidden = hidden.view(num, length, -1)[:, -1]
        return self.model.log_probs(hidden)

    def reorder(self, index: Tensor) -> None:
        if self.state is not None:
            self.state.reorder(index)


def _check(model, src, ptr_src, max_len):
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a Seq2Seq, got {type(model).__name__}")
    ptr_src = check_ptr(ptr_src, "ptr_src").to(src.device)
    if int(ptr_src[-1]) != src.numel():
        raise ValueError(f"ptr_src[-1] ({int(ptr_src[-1])}) must equal the number of source tokens ({src.numel()})")
    check_int("max_len", max_len, 1)
    return ptr_src


def _finish(tokens: Tensor, eos_id: int) -> list:
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return out


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
    batch = ptr_src.numel() - 1
    memory = model.encode(src, ptr_src)
    step = _Stepper(model, memory, ptr_src, use_cache)
    prefix = torch.full((batch, 1), model.bos_id, dtype=torch.long, device=src.device)
    scores = memory.new_zeros(batch)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        log_probs = step(prefix)
        best = log_probs.argmax(-1)
        best = torch.where(done, model.pad_id, best)
        scores += torch.where(done, 0.0, log_probs.gather(1, best.unsqueeze(1)).squeeze(1))
        prefix = torch.cat([prefix, best.unsqueeze(1)], 1)
        done |= best == model.eos_id
        if bool(done.all()):
            break
    return Decoded(_finish(prefix[:, 1:], model.eos_id), scores)


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
    r"""Beam search with the GNMT length penalty :math:`((5 + |y|) / 6)^\alpha`.

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
    step = _Stepper(model, memory[index], memory_ptr, use_cache)

    prefix = torch.full((batch * k, 1), model.bos_id, dtype=torch.long, device=device)
    scores = memory.new_full((batch, k), -float("inf"))
    scores[:, 0] = 0.0  # one live hypothesis at the start
    done = torch.zeros(batch * k, dtype=torch.bool, device=device)
    vocab = model.tgt_vocab
    for _ in range(max_len):
        log_probs = step(prefix)  # [B * k, V]
        # A finished hypothesis continues only with padding, at no cost.
        frozen = torch.full_like(log_probs, -float("inf"))
        frozen[:, model.pad_id] = 0.0
        log_probs = torch.where(done.unsqueeze(1), frozen, log_probs)
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        scores, flat = candidates.topk(k, dim=1)  # [B, k]
        origin = (flat // vocab + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
        token = (flat % vocab).view(-1)
        prefix = torch.cat([prefix[origin], token.unsqueeze(1)], 1)
        done = done[origin] | (token == model.eos_id)
        step.reorder(origin)
        if bool(done.all()):
            break
    tokens = prefix[:, 1:]
    lengths = ((tokens != model.pad_id) & (tokens != model.bos_id)).sum(1).clamp(min=1).to(scores.dtype)
    normalised = scores.view(-1) / ((5.0 + lengths) / 6.0) ** length_penalty
    best = normalised.view(batch, k).argmax(1) + torch.arange(batch, device=device) * k
    return Decoded(_finish(tokens[best], model.eos_id), scores.view(-1)[best])
