r"""The embedded translation task: English number words into French, both written by ``num2words``::

    997  ->  "nine hundred and ninety-seven"  ->  "neuf cent quatre-vingt-dix-sept"

It is generated, so it needs no download, and it is compositional: ``0..999_999`` is a thousands
part and a units part, each ``0..999``, with a few irregular forms (``quatre-vingts`` but
``quatre-vingt mille``, ``deux cents`` but ``deux cent mille``, ``mille`` not ``un mille``). A model
trained on a few percent of the numbers has to learn the structure to translate the unseen rest.

    >>> number_pairs([21])
    [('twenty-one', 'vingt et un')]
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from graphattn.text.vocab import tokenize

__all__ = ["Pair", "normalize", "number_pairs", "number_splits", "numbers_task", "core_numbers"]

Pair = tuple[str, str]


def normalize(text: str) -> str:
    """Lowercase, drop commas, collapse whitespace: ``"One thousand, two"`` -> ``"one thousand two"``.

    Hyphens and ``"and"`` are kept: they are part of how the numbers are written.
    """
    return " ".join(text.lower().replace(",", " ").split())


def number_pairs(numbers: Iterable[int]) -> list[Pair]:
    """``(english, french)`` number words of each integer, normalised by :func:`normalize`."""
    from num2words import num2words  # imported here so that the rest of the module works without it

    out = []
    for n in numbers:
        n = int(n)
        out.append((normalize(num2words(n, lang="en")), normalize(num2words(n, lang="fr"))))
    return out


def core_numbers(max_number: int) -> list[int]:
    # Numbers that hold every word form of both languages: 0..100 has all the units and tens
    # (incl. "vingt et un", "soixante et onze", "quatre-vingts"), the round hundreds have
    # "cents", 1000/2000 have "mille"/"thousand", the powers of a million their singular and plural.
    # They always go to train, so valid/test never ask for a word the model has never seen.
    core = set(range(101)) | {100 * k for k in range(1, 10)} | {1000 * k for k in range(1, 10)}
    core |= {10**4, 10**5} | {k * 10**p for p in (6, 9, 12) for k in (1, 2)}
    return sorted(n for n in core if n <= max_number)


def number_splits(seed: int = 0, max_number: int = 999_999, train_size: int = 20_000,
                  valid_size: int = 500, test_size: int = 1_000) -> dict[str, list[int]]:
    """Disjoint ``train``/``valid``/``test`` sets of integers in ``0..max_number``, fixed by ``seed``.

    ``train`` holds the core numbers (0..100, round hundreds and thousands; see
    ``_core_numbers``) plus uniform draws; ``valid`` and ``test`` are uniform draws from the rest,
    all without replacement, so no number (and no sentence) is in two splits.
    """
    core = core_numbers(max_number)
    sizes = {"train_size": train_size, "valid_size": valid_size, "test_size": test_size}
    for name, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{name} must be an int >= 0, got {size!r}")
    if train_size < len(core):
        raise ValueError(f"train_size ({train_size}) must be at least the {len(core)} core numbers")
    n_draw = train_size - len(core) + valid_size + test_size
    pool = max_number + 1 - len(core)
    if n_draw > pool:
        raise ValueError(f"the splits need {train_size + valid_size + test_size} distinct numbers, "
                         f"but 0..max_number ({max_number}) has only {max_number + 1}")
    rng = np.random.default_rng(seed)
    # Draw positions in the pool 0..max_number minus the core, then map them to numbers: rank
    # r in the pool is number r + (how many core numbers are <= it), found by a sorted search.
    r = rng.choice(pool, size=n_draw, replace=False)
    core_arr = np.asarray(core, dtype=np.int64)
    shifted = core_arr - np.arange(len(core))  # pool rank at which each core number is skipped
    drawn = (r + np.searchsorted(shifted, r, side="right")).tolist()
    n_train = train_size - len(core)
    return {
        "train": core + drawn[:n_train],
        "valid": drawn[n_train:n_train + valid_size],
        "test": drawn[n_train + valid_size:],
    }


def numbers_task(seed: int = 0, max_number: int = 999_999, train_size: int = 20_000,
                 valid_size: int = 500, test_size: int = 1_000) -> dict[str, list[Pair]]:
    """The demo translation task: English -> French number words, split as in :func:`number_splits`.

    Why these defaults: numbers up to 999 999 have six digits, so the thousands and the units part
    of a sentence each carry all of 0..999's structure and its irregular forms; 20 000 training
    pairs are 2 % of the range, so high exact match on the unseen test numbers means the model
    learnt the composition, not a lookup table (a small ``nn.Transformer`` on one CPU thread
    passes 85 % on valid within ~500 steps of 128 pairs, i.e. ~3 epochs); 500 validation pairs
    keep greedy decoding each epoch cheap; 1 000 test pairs estimate exact match to about
    +-1.5 %. Generating the defaults takes a few seconds (``num2words`` is ~0.1 ms a call).

    Returns ``{"train", "valid", "test"}`` -> list of ``(english, french)``. Raises
    ``RuntimeError`` should a valid/test pair hold a token no train pair holds (the core numbers
    in train rule that out; the check makes it a guarantee rather than a hope).
    """
    splits = {k: number_pairs(v) for k, v in number_splits(seed, max_number, train_size,
                                                             valid_size, test_size).items()}
    seen = {tok for _, fr in splits["train"] for tok in tokenize(fr)}
    seen |= {tok for en, _ in splits["train"] for tok in tokenize(en)}
    for name in ("valid", "test"):
        for en, fr in splits[name]:
            missing = set(tokenize(en) + tokenize(fr)) - seen
            if missing:
                raise RuntimeError(f"{name} pair {(en, fr)!r} has tokens not seen in train: "
                                   f"{sorted(missing)}")
    return splits
