r"""Word tokens and the vocabulary of the numbers task.

    >>> tokenize("quatre-vingt-dix-sept")
    ['quatre', '@-@', 'vingt', '@-@', 'dix', '@-@', 'sept']
    >>> detokenize(tokenize("nine hundred and ninety-seven"))
    'nine hundred and ninety-seven'
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence, Union

from torch import Tensor

__all__ = ["HYPHEN", "tokenize", "detokenize", "Vocab", "SPECIALS", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID"]

# A hyphen inside a word becomes its own token, written as Moses' "@-@" so that detokenisation
# knows to glue it to both neighbours; a free-standing "-" stays "-". Words generalise across
# numbers ("vingt" in "vingt-deux" and "quatre-vingts"); whole hyphenated forms would not.
HYPHEN = "@-@"
_INNER_HYPHEN = re.compile(r"(?<=[^\s-])-(?=[^\s-])")


def tokenize(text: str) -> list[str]:
    """Split on whitespace, and inner hyphens into :data:`HYPHEN` tokens.

    ``detokenize(tokenize(s)) == s`` for every ``s`` with single spaces and no leading or
    trailing whitespace (what :func:`normalize` and :func:`read_parallel` produce).
    """
    tokens: list[str] = []
    for word in text.split():
        parts = _INNER_HYPHEN.split(word)
        for i, part in enumerate(parts):
            if i:
                tokens.append(HYPHEN)
            tokens.append(part)
    return tokens


def detokenize(tokens: Sequence[str]) -> str:
    """Inverse of :func:`tokenize`: join with spaces and glue :data:`HYPHEN` to both neighbours."""
    return " ".join(tokens).replace(f" {HYPHEN} ", "-").replace(HYPHEN, "-").strip()


PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Vocab:
    r"""Token <-> id map with the special tokens ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``.

    Args:
        tokens (list[str]): all tokens in id order; the first four must be the specials.

    Build one with :meth:`build`; store it with :meth:`to_dict` (plain lists and strings, so a
    checkpoint holding it loads with ``torch.load(..., weights_only=True)``).
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"tokens must start with {list(SPECIALS)}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            dup = [t for t, c in Counter(tokens).items() if c > 1]
            raise ValueError(f"tokens must be distinct, got duplicates {dup[:5]}")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, sentences: Iterable[str], min_freq: int = 1) -> "Vocab":
        """Vocabulary of the :func:`tokenize` tokens seen at least ``min_freq`` times.

        Ordered by frequency, then alphabetically, so the same corpus always gives the same ids.
        """
        counts = Counter(tok for s in sentences for tok in tokenize(s))
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept)

    pad_id = property(lambda self: PAD_ID, doc="Id of ``<pad>`` (0).")
    bos_id = property(lambda self: BOS_ID, doc="Id of ``<bos>`` (1).")
    eos_id = property(lambda self: EOS_ID, doc="Id of ``<eos>`` (2).")
    unk_id = property(lambda self: UNK_ID, doc="Id of ``<unk>`` (3).")

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"Vocab({len(self)})"

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = True) -> list[int]:
        """Ids of ``tokenize(text)``; unknown tokens map to ``<unk>``."""
        ids = [self.stoi.get(tok, UNK_ID) for tok in tokenize(text)]
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Union[Sequence[int], Tensor], strip_special: bool = True) -> str:
        """Text of ``ids`` (list or 1-D tensor ``[T]``).

        With ``strip_special``, ``<pad>``/``<bos>`` are dropped and decoding stops at the first
        ``<eos>`` (what a decoder emits after it is not part of the output); ``<unk>`` stays.
        """
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if strip_special and i == EOS_ID:
                break
            if strip_special and i in (PAD_ID, BOS_ID):
                continue
            tokens.append(self.itos[i])
        return detokenize(tokens)

    def to_dict(self) -> dict[str, list[str]]:
        """``{"tokens": [...]}``: JSON-able and loadable with ``torch.load(weights_only=True)``."""
        return {"tokens": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or "tokens" not in d:
            raise ValueError(f"expected a dict with key 'tokens' (from Vocab.to_dict), "
                             f"got {type(d).__name__}")
        return cls(d["tokens"])
