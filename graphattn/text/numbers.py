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

from typing import Iterable, Sequence

import numpy as np

from graphattn.text.tokenizer import tokenize

__all__ = ["Pair", "SHOWCASE", "normalize", "number_pairs", "round_parts", "number_splits", "numbers_task", "core_numbers"]

Pair = tuple[str, str]

#: numbers that no split holds: the demo shows their translations as numbers never seen in training
#: (irregular forms: quatre-vingt mille, mille un, cent / cents, soixante et onze...)
SHOWCASE = (412, 80_000, 271_828, 999_999, 700_071, 1_001, 380_200, 61_091, 500_080)


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


def round_parts(high: int) -> list[int]:
    """The "round" values of a three-digit part in ``0..high``: trailing zeros (``40, 380, 700``),
    the numbers below 20, and the neighbours of round hundreds (``99, 101, 699, 701``)."""
    parts = set(range(0, 1000, 10)) | set(range(20)) | {h + e for h in range(100, 1000, 100) for e in (-1, 1)}
    return sorted(p for p in parts if p <= high)


def _draw_parts(rng: np.random.Generator, size: int, high: int, round_share: float) -> np.ndarray:
    # A part is 0 a quarter of its round draws and 1 a sixth of them: those are the structural
    # cases ("quatre-vingt mille", "mille un") a uniform draw hits once in a thousand.
    rounds = np.asarray(round_parts(high))
    kind = rng.random(size)
    special = np.where(kind < 0.25, 0, np.where(kind < 0.4, min(1, high), rng.choice(rounds, size)))
    return np.where(rng.random(size) < round_share, special, rng.integers(0, high + 1, size))


def _draw_numbers(rng: np.random.Generator, count: int, max_number: int, taken: set, round_share: float,
                  at_least_one_round: bool = False) -> list[int]:
    """``count`` distinct numbers not in ``taken`` (which grows), each ``1000 t + u`` with the parts
    ``t, u`` drawn by :func:`_draw_parts`; when the distribution runs dry (small ranges), the rest
    is drawn uniformly from what is left."""
    out: list[int] = []
    high_t = min(999, max_number // 1000)
    for _ in range(50):
        if len(out) >= count:
            break
        n = 4 * (count - len(out)) + 16
        if at_least_one_round:  # each part round with probability 1/2, and never neither
            which = rng.integers(0, 3, n)  # 0: thousands round, 1: units round, 2: both
            t = np.where(which != 1, _draw_parts(rng, n, high_t, 1.0), rng.integers(0, high_t + 1, n))
            u = np.where(which != 0, _draw_parts(rng, n, 999, 1.0), rng.integers(0, 1000, n))
        else:
            t, u = _draw_parts(rng, n, high_t, round_share), _draw_parts(rng, n, 999, round_share)
        for number in (1000 * t + u).tolist():
            if number <= max_number and number not in taken and len(out) < count:
                taken.add(number)
                out.append(number)
    if len(out) < count and not at_least_one_round:
        rest = np.setdiff1d(np.arange(max_number + 1), np.fromiter(taken, dtype=np.int64, count=len(taken)))
        extra = rng.permutation(rest)[:count - len(out)].tolist()
        taken.update(extra)
        out += extra
    return out


def number_splits(seed: int = 0, max_number: int = 999_999, train_size: int = 20_000, valid_size: int = 500,
                  test_size: int = 1_000, round_share: float = 0.4,
                  held_out: Sequence[int] = SHOWCASE) -> dict[str, list[int]]:
    """Disjoint ``train``/``valid``/``test``/``test_round`` sets of integers in ``0..max_number``, fixed by ``seed``.

    * ``valid`` and ``test``: uniform draws from all numbers but the core (0..100, round hundreds
      and thousands; :func:`core_numbers`).
    * ``train``: the core, then numbers ``1000 t + u`` whose parts ``t`` and ``u`` are each, with
      probability ``round_share``, a round value (0 for a quarter of those, 1 for a sixth, else
      one of :func:`round_parts`) and otherwise uniform. Uniform draws alone see a part of 0
      ("eighty thousand") or 1 ("one thousand and one") once in a thousand numbers: too rare
      for a model to learn the forms that only these take.
    * ``test_round``: up to ``test_size`` numbers with at least one round part (thousands, units
      or both, each part's round value drawn as in ``train``), none of them in another split:
      how well those forms were learnt. Fewer when a small range has no more.

    All are drawn without replacement, so no number (and no sentence) is in two splits, and none
    of ``held_out`` (core numbers excepted) is in any.
    """
    core = core_numbers(max_number)
    sizes = {"train_size": train_size, "valid_size": valid_size, "test_size": test_size}
    for name, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{name} must be an int >= 0, got {size!r}")
    if not 0.0 <= round_share <= 1.0:
        raise ValueError(f"round_share must be in [0, 1], got {round_share!r}")
    if train_size < len(core):
        raise ValueError(f"train_size ({train_size}) must be at least the {len(core)} core numbers")
    excluded = sorted(set(core) | {n for n in held_out if 0 <= n <= max_number})
    pool = max_number + 1 - len(excluded)
    if train_size - len(core) + valid_size + test_size > pool:
        raise ValueError(f"the splits need {train_size + valid_size + test_size} distinct numbers, "
                         f"but 0..max_number ({max_number}) has only {max_number + 1}")
    rng = np.random.default_rng(seed)
    # Draw positions in the pool 0..max_number minus the excluded numbers, then map them to
    # numbers: rank r in the pool is number r + (how many excluded numbers are <= it), found by
    # a sorted search.
    r = rng.choice(pool, size=valid_size + test_size, replace=False)
    shifted = np.asarray(excluded, dtype=np.int64) - np.arange(len(excluded))  # rank where each is skipped
    drawn = (r + np.searchsorted(shifted, r, side="right")).tolist()
    taken = set(excluded) | set(drawn)
    train = core + _draw_numbers(rng, train_size - len(core), max_number, taken, round_share)
    return {"train": train, "valid": drawn[:valid_size], "test": drawn[valid_size:],
            "test_round": _draw_numbers(rng, test_size, max_number, taken, round_share, at_least_one_round=True)}


def numbers_task(seed: int = 0, max_number: int = 999_999, train_size: int = 20_000,
                 valid_size: int = 500, test_size: int = 1_000, round_share: float = 0.4) -> dict[str, list[Pair]]:
    """The demo translation task: English -> French number words, split as in :func:`number_splits`.

    Why these defaults: numbers up to 999 999 have six digits, so the thousands and the units part
    of a sentence each carry all of 0..999's structure and its irregular forms; 20 000 training
    pairs are 2 % of the range, so high exact match on the unseen test numbers means the model
    learnt the composition, not a lookup table (a small ``nn.Transformer`` on one CPU thread
    passes 85 % on valid within ~500 steps of 128 pairs, i.e. ~3 epochs); 500 validation pairs
    keep greedy decoding each epoch cheap; 1 000 test pairs estimate exact match to about
    +-1.5 %. Generating the defaults takes a few seconds (``num2words`` is ~0.1 ms a call).

    Returns ``{"train", "valid", "test", "test_round"}`` -> list of ``(english, french)``. Raises
    ``RuntimeError`` should a valid/test pair hold a token no train pair holds (the core numbers
    in train rule that out; the check makes it a guarantee rather than a hope).
    """
    splits = {k: number_pairs(v) for k, v in number_splits(seed, max_number, train_size,
                                                             valid_size, test_size, round_share).items()}
    seen = {tok for _, fr in splits["train"] for tok in tokenize(fr)}
    seen |= {tok for en, _ in splits["train"] for tok in tokenize(en)}
    for name in ("valid", "test", "test_round"):
        for en, fr in splits[name]:
            missing = set(tokenize(en) + tokenize(fr)) - seen
            if missing:
                raise RuntimeError(f"{name} pair {(en, fr)!r} has tokens not seen in train: "
                                   f"{sorted(missing)}")
    return splits
