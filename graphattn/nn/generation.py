r"""Generation, one token at a time, for every model that decodes: greedy, sampled and beam search.

A model hands these loops a *step*: a callable that appends one token to each of ``M`` sequences
(``tokens [M]``) and returns the scores of the next token, ``[M, V]`` (logits, or log-probabilities
where the model has them), together with the scores after the sequences' start (a prompt, or BOS).
Beam search also needs ``reorder(index)``, which keeps the sequences ``index`` of the model's state.
A cached step (a model's ``decode_step`` on a :class:`~graphattn.nn.KVCache`) costs O(t) at step
``t``; :class:`Redecode` is the same interface without a cache, running the whole prefix again
(O(t^2)), the reference the cached path must equal.

* :class:`~graphattn.nn.CausalLM` samples (``generate``: prompts, temperature, top-k, top-p, a seed);
* :class:`~graphattn.text.model.Seq2Seq` decodes greedily or by beam search
  (:mod:`graphattn.text.decoding`), with the cache or without.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Optional

import torch
from torch import Tensor

from graphattn.utils.batch import lengths_to_ptr
from graphattn.utils.checks import check_float, check_int

__all__ = ["sample_next", "sampler", "sample", "beam", "trim_at_eos", "Redecode"]

Step = Callable[[Tensor], Tensor]


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    r"""One token per row of ``logits [M, V]``: greedy for ``temperature == 0``, else sampled from
    :math:`\operatorname{softmax}(z / T)` restricted to the ``top_k`` most probable tokens and to
    the smallest set whose probability reaches ``top_p`` (nucleus sampling; the most probable
    token always stays). Returns ``[M]`` LongTensor."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already reach top_p.
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def sampler(temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
            seed: Optional[int] = None, device=None) -> Callable[[Tensor], Tensor]:
    """:func:`sample_next` with these options checked, as a function of the logits ``[M, V]``.

    ``seed`` seeds a generator local to the sampler on ``device`` (torch's global RNG is neither
    used nor changed); without it sampling draws from the global RNG.
    """
    check_float("temperature", temperature, 0.0, math.inf)
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None:  # one range, (0, 1], in every message
        if isinstance(top_p, bool) or not isinstance(top_p, Real):
            raise TypeError(f"top_p must be a float in (0, 1], got {type(top_p).__name__} {top_p!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    generator = None
    if seed is not None:
        # torch.Generator takes any 64-bit seed, signed or not
        seed = check_int("seed", seed, -2 ** 63, 2 ** 64 - 1)
        generator = torch.Generator(device=device).manual_seed(seed)
    return lambda logits: sample_next(logits, temperature, top_k, top_p, generator)


def sample(step: Step, scores: Tensor, max_new: int, choose: Callable[[Tensor], Tensor],
           eos_id: Optional[int] = None, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Up to ``max_new`` tokens for each of ``M`` sequences, ``choose`` picking each one from the
    scores (:func:`sampler`; ``temperature=0`` is greedy decoding).

    Args:
        step (callable): appends ``tokens [M]`` and returns the next scores ``[M, V]``.
        scores (Tensor): ``[M, V]`` scores of the first token to choose.
        max_new (int): tokens to add (at least 1).
        choose (callable): ``[M, V] -> [M]`` token ids.
        eos_id (int, optional): a sequence that emits it stops: ``pad_id`` follows it.

    Returns:
        ``(tokens [M, n], total [M])``: ``n <= max_new`` (all sequences stopped earlier), and the
        sum of the chosen tokens' scores (log-probabilities when ``step`` gives them).
    """
    num = scores.size(0)
    done = torch.zeros(num, dtype=torch.bool, device=scores.device)
    total = scores.new_zeros(num)
    chosen = []
    for i in range(max_new):
        token = choose(scores)  # every row draws, finished ones too: the same draws as without eos
        token = torch.where(done, pad_id, token)
        total += torch.where(done, 0.0, scores.gather(1, token.unsqueeze(1)).squeeze(1))
        chosen.append(token)
        if eos_id is not None:
            done |= token == eos_id
        if i == max_new - 1 or bool(done.all()):
            break
        scores = step(token)  # finished sequences run on; their tokens are padding
    return torch.stack(chosen, 1), total


def beam(step: Step, reorder: Callable[[Tensor], None], scores: Tensor, beam_size: int, max_new: int,
         eos_id: int, pad_id: int = 0, length_penalty: float = 0.6, bos_id: Optional[int] = None) -> tuple[Tensor, Tensor]:
    r"""Beam search with the GNMT length penalty :math:`((5 + |y|) / 6)^\alpha`.

    Keeps ``beam_size`` hypotheses per example, laid out as ``M = B * beam_size`` sequences
    (hypothesis ``j`` of example ``b`` is sequence ``b * beam_size + j``; they start alike). A
    hypothesis that emitted ``eos_id`` keeps its score and competes with the open ones by its
    length-normalised score. ``beam_size=1`` is greedy.

    Args:
        step (callable): appends ``tokens [M]`` and returns log-probabilities ``[M, V]``.
        reorder (callable): keeps the sequences ``index [M]`` of the model's state (within an example).
        scores (Tensor): ``[M, V]`` log-probabilities of the first token.
        bos_id (int, optional): a token that, like ``pad_id``, does not count in the length.

    Returns:
        ``(tokens [B, n], score [B])``: the best hypothesis per example and its (unnormalised)
        log-probability.
    """
    batch, k, vocab, device = scores.size(0) // beam_size, beam_size, scores.size(1), scores.device
    total = scores.new_full((batch, k), -math.inf)
    total[:, 0] = 0.0  # one live hypothesis at the start
    done = torch.zeros(batch * k, dtype=torch.bool, device=device)
    tokens = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    for i in range(max_new):
        # A finished hypothesis continues only with padding, at no cost.
        frozen = torch.full_like(scores, -math.inf)
        frozen[:, pad_id] = 0.0
        scores = torch.where(done.unsqueeze(1), frozen, scores)
        candidates = (total.view(-1, 1) + scores).view(batch, k * vocab)
        total, flat = candidates.topk(k, dim=1)  # [B, k]
        origin = (flat // vocab + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
        token = (flat % vocab).view(-1)
        tokens = torch.cat([tokens[origin], token.unsqueeze(1)], 1)
        done = done[origin] | (token == eos_id)
        reorder(origin)
        if i == max_new - 1 or bool(done.all()):
            break
        scores = step(token)
    counted = (tokens != pad_id) if bos_id is None else (tokens != pad_id) & (tokens != bos_id)
    lengths = counted.sum(1).clamp(min=1).to(total.dtype)
    normalised = total.view(-1) / ((5.0 + lengths) / 6.0) ** length_penalty
    best = normalised.view(batch, k).argmax(1) + torch.arange(batch, device=device) * k
    return tokens[best], total.view(-1)[best]


def trim_at_eos(tokens: Tensor, eos_id: Optional[int]) -> list:
    """Rows of ``tokens [M, n]`` as lists, each up to and including its first ``eos_id``."""
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return out


class Redecode:
    """The step interface without a cache: each step runs the whole prefix again.

    ``run(tokens [N], ptr [M + 1])`` gives the scores ``[M, V]`` after the last token of each
    sequence of a flat batch; the prefixes start as ``tokens, ptr`` (ragged). O(t^2) at step t:
    the reference of the cached path, and the way to decode a model that has no cache.
    """

    def __init__(self, run: Callable[[Tensor, Tensor], Tensor], tokens: Tensor, ptr: Tensor):
        self.run, self.tokens, self.ptr = run, tokens, ptr

    def first(self) -> Tensor:
        """The scores after the prefixes as they are."""
        return self.run(self.tokens, self.ptr)

    def step(self, token: Tensor) -> Tensor:
        """Append ``token [M]`` (one per sequence) and run the prefixes."""
        lengths = self.ptr.diff() + 1
        ptr = lengths_to_ptr(lengths)
        new = torch.zeros(int(ptr[-1]), dtype=torch.bool, device=token.device)
        new[ptr[1:] - 1] = True  # each sequence's new last position
        tokens = torch.empty_like(new, dtype=torch.long)
        tokens[new], tokens[~new] = token, self.tokens
        self.tokens, self.ptr = tokens, ptr
        return self.run(tokens, ptr)

    def reorder(self, index: Tensor) -> None:
        """Keep the sequences ``index``."""
        lengths = self.ptr.diff()[index]
        ptr = lengths_to_ptr(lengths)
        total = int(ptr[-1])
        # Row r of new sequence i is row ptr[index[i]] + r of the old batch.
        offset = torch.repeat_interleave(self.ptr[:-1][index] - ptr[:-1], lengths, output_size=total)
        self.tokens, self.ptr = self.tokens[torch.arange(total, device=ptr.device) + offset], ptr
