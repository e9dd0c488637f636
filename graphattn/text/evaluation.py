"""Translating sentences and scoring translations (BLEU, exact match), in one process or sharded."""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from graphattn import distributed
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.metrics import bleu, bleu_tokenize, exact_match
from graphattn.text.model import Seq2Seq
from graphattn.text.tokenizer import UNK_ID, Tokenizer
from graphattn.utils.batch import pack_sequences

__all__ = ["translate", "input_warnings", "scores", "translation_scores", "translation_scores_sharded"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def translate(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, sentences: Sequence[str],
              max_len: int = 64, beam_size: int = 1, batch_size: int = 250, length_penalty: float = 0.6,
              warn: bool = True) -> list[str]:
    """Translations of ``sentences`` (greedy, or beam search with ``beam_size > 1`` and the GNMT
    ``length_penalty`` of :func:`~graphattn.text.decoding.beam_search`).

    Sources longer than ``max_len`` tokens are cut to ``max_len`` (``<eos>`` included), as in
    training; an empty (or blank) sentence translates to an empty one, without the model. With
    ``warn``, one warning each (logging) says how many sentences were cut and how many hold tokens
    the source tokenizer does not know (``<unk>``), which no model can translate.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sentences = list(sentences)
    out = [""] * len(sentences)
    todo = [i for i, s in enumerate(sentences) if s.strip()]  # encode_batch raises for non-strings
    encoded = src_tokenizer.encode_batch([sentences[i] for i in todo], add_eos=False) if todo else []
    if warn:
        for message in input_warnings(encoded, max_len):
            logger.warning("%s", message)
    for i in range(0, len(todo), batch_size):
        ids = encoded[i:i + batch_size]
        src, ptr = pack_sequences([torch.tensor(s[:max_len - 1] + [src_tokenizer.eos_id], dtype=torch.long) for s in ids])
        src, ptr = src.to(device), ptr.to(device)
        decoded = (greedy_decode(model, src, ptr, max_len) if beam_size == 1
                   else beam_search(model, src, ptr, beam_size, length_penalty, max_len=max_len))
        for j, tokens in zip(todo[i:i + batch_size], decoded.tokens):
            out[j] = tgt_tokenizer.decode(tokens)
    model.train(was_training)
    return out


def input_warnings(encoded: Sequence[Sequence[int]], max_len: int) -> list[str]:
    """What a translation will lose of the encoded sources (without ``<eos>``): sentences cut to
    ``max_len`` tokens, and sentences holding ``<unk>``."""
    messages = []
    lengths = [len(ids) + 1 for ids in encoded]  # + <eos>
    cut = sum(n > max_len for n in lengths)
    if cut:
        messages.append(f"{cut} of {len(encoded)} sentences are longer than --max-len ({max_len}) tokens (up to "
                        f"{max(lengths)}) and were cut before translation: raise --max-len to translate them whole")
    unknown = [sum(i == UNK_ID for i in ids) for ids in encoded]
    if any(unknown):
        messages.append(f"{sum(u > 0 for u in unknown)} of {len(encoded)} sentences hold {sum(unknown)} token(s) the "
                        f"source tokenizer does not know (<unk>): their translations cannot say them")
    return messages


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """``{"bleu", "bleu_tokenize", "exact_match", "n", "empty"}``: BLEU (over words, or over
    characters where sentences are mostly single words: :func:`~graphattn.text.metrics.bleu_tokenize`)
    and exact match (percentages), the number of sentences and of empty hypotheses."""
    tokenize = bleu_tokenize(references)
    return {"bleu": bleu(hypotheses, references, tokenize), "bleu_tokenize": tokenize,
            "exact_match": exact_match(hypotheses, references), "n": len(references),
            "empty": sum(not h.strip() for h in hypotheses)}


def translation_scores(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]],
             max_len: int = 64, beam_size: int = 1) -> dict:
    """:func:`scores` of the model's translations of ``pairs``."""
    hyps = translate(model, src_tokenizer, tgt_tokenizer, [s for s, _ in pairs], max_len, beam_size)
    return scores(hyps, [t for _, t in pairs])


def translation_scores_sharded(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer,
                     pairs: Sequence[tuple[str, str]], max_len: int, ctx: distributed.Context) -> dict:
    """:func:`translation_scores` with each rank translating ``pairs[rank::W]``; every rank gets the same scores."""
    hyps = distributed.gather_shards(
        translate(model, src_tokenizer, tgt_tokenizer, [s for s, _ in pairs[ctx.rank::ctx.world_size]], max_len,
                  warn=False), ctx)  # training warned about its validation data before the first step
    return scores(hyps, [t for _, t in pairs])
