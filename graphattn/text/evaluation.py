"""Translating sentences and scoring translations (BLEU, exact match), in one process or sharded."""
from __future__ import annotations

from typing import Sequence

import torch

from graphattn import distributed
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.metrics import bleu, bleu_tokenize, exact_match
from graphattn.text.model import Seq2Seq
from graphattn.text.tokenizer import Tokenizer
from graphattn.utils.batch import pack_sequences

__all__ = ["translate", "scores", "evaluate", "evaluate_sharded"]


@torch.no_grad()
def translate(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, sentences: Sequence[str],
              max_len: int = 64, beam_size: int = 1, batch_size: int = 250, length_penalty: float = 0.6) -> list[str]:
    """Translations of ``sentences`` (greedy, or beam search with ``beam_size > 1`` and the GNMT
    ``length_penalty`` of :func:`~graphattn.text.decoding.beam_search`).

    Sources longer than ``max_len`` tokens are cut to ``max_len`` (``<eos>`` included), as in training.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(sentences), batch_size):
        ids = src_tokenizer.encode_batch(sentences[i:i + batch_size], add_eos=False)
        src, ptr = pack_sequences([torch.tensor(s[:max_len - 1] + [src_tokenizer.eos_id], dtype=torch.long) for s in ids])
        src, ptr = src.to(device), ptr.to(device)
        decoded = (greedy_decode(model, src, ptr, max_len) if beam_size == 1
                   else beam_search(model, src, ptr, beam_size, length_penalty, max_len=max_len))
        out += [tgt_tokenizer.decode(tokens) for tokens in decoded.tokens]
    model.train(was_training)
    return out


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """``{"bleu", "bleu_tokenize", "exact_match", "n", "empty"}``: BLEU (over words, or over
    characters where sentences are mostly single words: :func:`~graphattn.text.metrics.bleu_tokenize`)
    and exact match (percentages), the number of sentences and of empty hypotheses."""
    tokenize = bleu_tokenize(references)
    return {"bleu": bleu(hypotheses, references, tokenize), "bleu_tokenize": tokenize,
            "exact_match": exact_match(hypotheses, references), "n": len(references),
            "empty": sum(not h.strip() for h in hypotheses)}


def evaluate(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]],
             max_len: int = 64, beam_size: int = 1) -> dict:
    """:func:`scores` of the model's translations of ``pairs``."""
    hyps = translate(model, src_tokenizer, tgt_tokenizer, [s for s, _ in pairs], max_len, beam_size)
    return scores(hyps, [t for _, t in pairs])




def evaluate_sharded(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer,
                     pairs: Sequence[tuple[str, str]], max_len: int, ctx: distributed.Context) -> dict:
    """:func:`evaluate` with each rank translating ``pairs[rank::W]``; every rank gets the same scores."""
    hyps = distributed.gather_shards(
        translate(model, src_tokenizer, tgt_tokenizer, [s for s, _ in pairs[ctx.rank::ctx.world_size]], max_len), ctx)
    return scores(hyps, [t for _, t in pairs])
