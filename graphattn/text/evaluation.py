"""Translating sentences and scoring translations (BLEU, exact match), in one process or sharded."""
from __future__ import annotations

from typing import Sequence

import torch

from graphattn import distributed
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.metrics import bleu, exact_match
from graphattn.text.model import Seq2Seq
from graphattn.text.vocab import Vocab
from graphattn.utils.batch import pack_sequences

__all__ = ["translate", "evaluate", "evaluate_sharded"]


@torch.no_grad()
def translate(model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, sentences: Sequence[str],
              max_len: int = 64, beam_size: int = 1, batch_size: int = 250) -> list[str]:
    """Translations of ``sentences`` (greedy, or beam search with ``beam_size > 1``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(sentences), batch_size):
        src, ptr = pack_sequences([torch.tensor(src_vocab.encode(s), dtype=torch.long) for s in sentences[i:i + batch_size]])
        src, ptr = src.to(device), ptr.to(device)
        decoded = (greedy_decode(model, src, ptr, max_len) if beam_size == 1
                   else beam_search(model, src, ptr, beam_size, max_len=max_len))
        out += [tgt_vocab.decode(tokens) for tokens in decoded.tokens]
    model.train(was_training)
    return out


def evaluate(model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, pairs: Sequence[tuple[str, str]],
             max_len: int = 64, beam_size: int = 1) -> dict:
    """``{"bleu", "exact_match", "n"}`` of the model's translations of ``pairs`` (percentages)."""
    hyps = translate(model, src_vocab, tgt_vocab, [s for s, _ in pairs], max_len, beam_size)
    refs = [t for _, t in pairs]
    return {"bleu": bleu(hyps, refs), "exact_match": exact_match(hyps, refs), "n": len(pairs)}




def evaluate_sharded(model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, pairs: Sequence[tuple[str, str]],
                     max_len: int, ctx: distributed.Context) -> dict:
    """:func:`evaluate` with each rank translating ``pairs[rank::W]``; every rank gets the same scores."""
    hyps = distributed.gather_shards(
        translate(model, src_vocab, tgt_vocab, [s for s, _ in pairs[ctx.rank::ctx.world_size]], max_len), ctx)
    refs = [t for _, t in pairs]
    return {"bleu": bleu(hyps, refs), "exact_match": exact_match(hyps, refs), "n": len(pairs)}
