r"""What a model cannot learn from its data, said before (and after) training rather than found
out from a score of zero.

* Unknown tokens: a ``word`` or ``char`` tokenizer trained on the training text maps validation
  words it never saw to ``<unk>``, which no model can translate or predict. Where every sentence
  is one word of its own (languages that write numbers as one compound word, names, code), the
  whole validation set is unknown. The byte-level tokenizers (``bpe``, ``unigram``) never are.
* Length: pairs longer than ``max_len`` tokens were cut for training, and validation targets
  longer than it cannot be generated whole.
* Empty translations: a model that emits ``<eos>`` first.

Each function returns the messages (plain strings); the training loop and the CLI log them
(logger ``graphattn.text.train`` or ``graphattn.cli``), once each.
"""
from __future__ import annotations

from typing import Optional, Sequence

from graphattn.text.tokenizer import Tokenizer

__all__ = ["UNKNOWN_RATE", "EMPTY_RATE", "data_warnings", "empty_warning"]

#: validation tokens that may be unknown before a warning
UNKNOWN_RATE = 0.01
#: translations that may be empty before a warning
EMPTY_RATE = 0.01


def _unknown(side: str, tokenizer: Tokenizer, texts: Sequence[str]) -> Optional[str]:
    rate = tokenizer.unknown_rate(texts)
    if rate <= UNKNOWN_RATE:
        return None
    return (f"{100 * rate:.1f}% of the {side} validation tokens are unknown (<unk>) to the {tokenizer.kind} "
            f"tokenizer trained on the training text: no model can learn them. A byte-level subword "
            f"tokenizer has no unknown tokens: --tokenizer bpe (or unigram)")


def data_warnings(src_tokenizer: Optional[Tokenizer], tgt_tokenizer: Tokenizer, valid_pairs: Sequence = (),
                  train_set=None, max_len: Optional[int] = None, valid_texts: Sequence[str] = ()) -> list[str]:
    """Warnings about training and validation data, before training.

    Args:
        src_tokenizer, tgt_tokenizer (Tokenizer): a translation run's tokenizers (``src_tokenizer``
            None for a language model, whose tokenizer is ``tgt_tokenizer``).
        valid_pairs (list of (str, str)): translation validation pairs.
        train_set (ParallelDataset, optional): the encoded training pairs (its ``truncated`` count).
        max_len (int, optional): the longest sentence in tokens.
        valid_texts (list of str): a language model's validation documents.
    """
    messages = []
    if src_tokenizer is None:
        checks = [("text", tgt_tokenizer, list(valid_texts))]
    else:
        checks = [("source", src_tokenizer, [s for s, _ in valid_pairs]),
                  ("target", tgt_tokenizer, [t for _, t in valid_pairs])]
    messages += [m for m in (_unknown(*check) for check in checks) if m]
    if train_set is not None and getattr(train_set, "truncated", 0):
        messages.append(f"{train_set.truncated} of {len(train_set)} training pairs are longer than --max-len "
                        f"({max_len}) tokens and were cut: raise --max-len to learn them whole")
    if max_len is not None and valid_pairs:
        lengths = [len(ids) + 1 for ids in tgt_tokenizer.encode_batch([t for _, t in valid_pairs], add_eos=False)]
        too_long = sum(n > max_len for n in lengths)
        if too_long:
            messages.append(f"{too_long} of {len(valid_pairs)} validation targets need more than --max-len "
                            f"({max_len}) tokens (up to {max(lengths)}): their translations will be cut")
    return messages


def empty_warning(empty: int, total: int) -> Optional[str]:
    """A warning when more than :data:`EMPTY_RATE` of ``total`` translations were empty, else None."""
    if not total or empty / total <= EMPTY_RATE:
        return None
    return (f"{empty} of {total} translations are empty: the model ends sentences before it writes them "
            f"(too little training, or targets it cannot spell: see the warnings above)")
