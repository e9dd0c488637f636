r"""The embedded translation task and its data pipeline.

The demo task translates English number words into French number words, both written by
``num2words``::

    997  ->  "nine hundred and ninety-seven"  ->  "neuf cent quatre-vingt-dix-sept"

It is generated, so it needs no download, and it is compositional: ``0..999_999`` is a thousands
part and a units part, each ``0..999``, with a few irregular forms (``quatre-vingts`` but
``quatre-vingt mille``, ``deux cents`` but ``deux cent mille``, ``mille`` not ``un mille``). A model
trained on a few percent of the numbers has to learn the structure to translate the unseen rest.

Pipeline: :func:`numbers_task` (or :func:`read_parallel` + :func:`split_pairs` for any other
parallel text) -> :class:`Vocab` -> :class:`ParallelDataset` -> ``DataLoader`` with
:class:`LengthBucketSampler` as ``batch_sampler`` and :func:`collate` -> :func:`bleu`,
:func:`exact_match`.

Example::

    >>> tokenize("quatre-vingt-dix-sept")
    ['quatre', '@-@', 'vingt', '@-@', 'dix', '@-@', 'sept']
    >>> detokenize(tokenize("nine hundred and ninety-seven"))
    'nine hundred and ninety-seven'
    >>> number_pairs([21])
    [('twenty-one', 'vingt et un')]
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

__all__ = [
    "number_pairs", "number_splits", "numbers_task", "normalize", "HYPHEN", "tokenize", "detokenize",
    "Vocab", "ParallelDataset", "read_parallel", "split_pairs", "collate", "LengthBucketSampler",
    "bleu", "exact_match", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID",
]

Pair = tuple[str, str]
PathLike = Union[str, os.PathLike]

# --- The numbers task --------------------------------------------------------------------------


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


def _core_numbers(max_number: int) -> list[int]:
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
    core = _core_numbers(max_number)
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


# --- Tokenisation and vocabulary ---------------------------------------------------------------

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


# --- Datasets and files ------------------------------------------------------------------------


class ParallelDataset(Dataset):
    r"""Sentence pairs encoded once: item ``i`` is ``(src_ids [S], tgt_ids [T])``, both LongTensor.

    ``src_ids`` ends with ``<eos>``; ``tgt_ids`` has neither ``<bos>`` nor ``<eos>``: :func:`collate`
    adds them to make the decoder input and output.
    """

    def __init__(self, pairs: Sequence[Pair], src_vocab: Vocab, tgt_vocab: Vocab):
        self.pairs = list(pairs)
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.src = [torch.tensor(src_vocab.encode(s, add_eos=True), dtype=torch.long)
                    for s, _ in self.pairs]
        self.tgt = [torch.tensor(tgt_vocab.encode(t, add_eos=False), dtype=torch.long)
                    for _, t in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.src[i], self.tgt[i]

    @property
    def lengths(self) -> list[int]:
        """Padded length each example needs: ``max(S, T + 1)``, for :class:`LengthBucketSampler`."""
        return [max(len(s), len(t) + 1) for s, t in zip(self.src, self.tgt)]


def _read_lines(path: PathLike) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")
    with open(path, encoding="utf-8") as f:
        return [" ".join(line.split()) for line in f.read().splitlines()]


def read_parallel(src_file: PathLike, tgt_file: PathLike) -> list[Pair]:
    """Pairs from two UTF-8 files of one sentence a line, line ``i`` translating line ``i``.

    Whitespace within a line is collapsed to single spaces. Pairs where either side is empty
    are skipped (they teach nothing, and blank lines are how such files usually go wrong at the
    end); the line counts must match all the same, else ``ValueError`` naming both files.
    """
    src, tgt = _read_lines(src_file), _read_lines(tgt_file)
    if len(src) != len(tgt):
        raise ValueError(f"parallel files must have the same number of lines, got {len(src)} in "
                         f"{os.fspath(src_file)!r} and {len(tgt)} in {os.fspath(tgt_file)!r}")
    return [(s, t) for s, t in zip(src, tgt) if s and t]


def split_pairs(pairs: Sequence[Pair], valid_fraction: float = 0.1,
                seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Random ``(train, valid)`` split with ``round(valid_fraction * len(pairs))`` valid pairs."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = round(valid_fraction * len(pairs))
    return [pairs[i] for i in perm[n_valid:]], [pairs[i] for i in perm[:n_valid]]


# --- Batching ----------------------------------------------------------------------------------


def collate(batch: Sequence[tuple[Tensor, Tensor]], pad_id: int = PAD_ID, bos_id: int = BOS_ID,
            eos_id: int = EOS_ID) -> dict[str, Tensor]:
    """Pad a list of ``(src_ids [S_b], tgt_ids [T_b])`` into a batch (``batch_first``).

    Returns a dict with ``src [B, S]``, ``src_lengths [B]``, ``src_padding_mask [B, S]``,
    ``tgt_in [B, T]`` (``<bos>`` + tgt, the decoder input), ``tgt_out [B, T]`` (tgt + ``<eos>``,
    the labels), ``tgt_lengths [B]`` (``T_b + 1``) and ``tgt_padding_mask [B, T]``.
    Masks are True = padding, as torch's ``key_padding_mask``.
    """
    src = [s for s, _ in batch]
    tgt_in = [torch.cat([torch.tensor([bos_id]), t]) for _, t in batch]
    tgt_out = [torch.cat([t, torch.tensor([eos_id])]) for _, t in batch]
    out = {
        "src": pad_sequence(src, batch_first=True, padding_value=pad_id),
        "src_lengths": torch.tensor([len(s) for s in src]),
        "tgt_in": pad_sequence(tgt_in, batch_first=True, padding_value=pad_id),
        "tgt_out": pad_sequence(tgt_out, batch_first=True, padding_value=pad_id),
        "tgt_lengths": torch.tensor([len(t) for t in tgt_in]),
    }
    # From lengths, not from `== pad_id`: a token may legitimately share the pad id.
    out["src_padding_mask"] = torch.arange(out["src"].size(1)) >= out["src_lengths"][:, None]
    out["tgt_padding_mask"] = torch.arange(out["tgt_in"].size(1)) >= out["tgt_lengths"][:, None]
    return out


class LengthBucketSampler(Sampler[list[int]]):
    r"""Batches of examples of similar length, reshuffled each epoch; a ``batch_sampler``.

    Each epoch the examples are shuffled, cut into chunks of ``bucket_batches`` batches, sorted
    by length within each chunk and cut into batches, and the batches are shuffled again. Sorting
    only within chunks keeps batches of similar length (little padding) while every epoch still
    sees different batches.

    With ``num_replicas > 1`` (DDP) ``batch_size`` and ``max_tokens`` describe the *global*
    batch, the one the optimizer step sees: every rank builds the same global batches and takes
    every ``num_replicas``-th example of each (``batch[rank::num_replicas]``, interleaved as
    ``DistributedSampler`` interleaves a dataset), so the ranks' shares are disjoint, of similar
    lengths, and together exactly the batch one process would get. Every rank gets the same
    number of batches; a global batch with fewer examples than ranks (the last of a chunk, or a
    lone over-long example) is merged into its neighbour so that no rank gets an empty share.

    Args:
        lengths (list[int]): padded length of each example (e.g. ``ParallelDataset.lengths``).
        batch_size (int, optional): at most this many examples a (global) batch. (default: :obj:`None`)
        max_tokens (int, optional): at most this many padded tokens (``size * longest``) a
            (global) batch; an example longer than it gets a batch to itself. (default: :obj:`None`)
        shuffle (bool, optional): shuffle examples and batches each epoch. (default: :obj:`True`)
        seed (int, optional): the order of epoch ``e`` is fixed by ``seed + e``. (default: ``0``)
        drop_last (bool, optional): drop the last, smaller batch (with ``batch_size``).
            (default: :obj:`False`)
        num_replicas (int, optional): number of DDP processes sharing each batch. (default: ``1``)
        rank (int, optional): this process, in ``0..num_replicas-1``. (default: ``0``)
        bucket_batches (int, optional): batches per sorted chunk. (default: ``50``)
    """

    def __init__(self, lengths: Sequence[int], batch_size: Optional[int] = None,
                 max_tokens: Optional[int] = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0,
                 bucket_batches: int = 50):
        if batch_size is None and max_tokens is None:
            raise ValueError("give batch_size or max_tokens (or both), got neither")
        for name, v in (("batch_size", batch_size), ("max_tokens", max_tokens)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {v!r}")
        if not isinstance(num_replicas, int) or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                             f"num_replicas={num_replicas}, rank={rank}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        if 0 < len(self.lengths) < num_replicas:
            raise ValueError(f"{len(self.lengths)} examples cannot be shared by num_replicas={num_replicas} ranks")
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_replicas, self.rank, self.bucket_batches = num_replicas, rank, bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (call before each epoch, as with ``DistributedSampler``)."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if n == 0:
            return []
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        # Chunk size in examples; with max_tokens only, estimate a batch's size from the mean length.
        mean_length = max(1, int(self.lengths.float().mean()))
        per_batch = self.batch_size or max(1, self.max_tokens // mean_length)
        chunk = per_batch * self.bucket_batches
        lens = self.lengths.tolist()  # Python ints: the loop below is per example
        batches: list[list[int]] = []
        for start in range(0, n, chunk):
            idx = order[start:start + chunk]
            idx = idx[torch.argsort(self.lengths[idx], stable=True)].tolist()
            batch: list[int] = []
            longest = 0
            for i in idx:
                new_longest = max(longest, lens[i])
                full = (self.batch_size is not None and len(batch) == self.batch_size) or (
                    self.max_tokens is not None and (len(batch) + 1) * new_longest > self.max_tokens)
                if batch and full:
                    batches.append(batch)
                    batch, new_longest = [], lens[i]
                batch.append(i)
                longest = new_longest
            if batch:
                batches.append(batch)
        short = self.batch_size is not None and batches and len(batches[-1]) < self.batch_size
        if self.drop_last and short:
            batches.pop()  # with batch_size alone only this one is short: chunks hold whole batches
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if self.num_replicas > 1:
            batches = [b[self.rank::self.num_replicas] for b in _merge_small(batches, self.num_replicas)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def _merge_small(batches: list[list[int]], size: int) -> list[list[int]]:
    """``batches`` with each one of fewer than ``size`` examples merged into the one before it
    (or after it, for the first)."""
    out: list[list[int]] = []
    carry: list[int] = []
    for batch in batches:
        batch = carry + batch
        carry = []
        if len(batch) < size:
            if out:
                out[-1] = out[-1] + batch
            else:
                carry = batch
            continue
        out.append(batch)
    if carry:  # every batch was small: only possible when all of them together are too
        out.append(carry)
    return out


# --- Metrics -----------------------------------------------------------------------------------


def _check_corpora(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses and references must have the same length, got "
                         f"{len(hypotheses)} and {len(references)}")
    if not hypotheses:
        raise ValueError("hypotheses and references must not be empty")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in ``[0, 100]`` of detokenised text, with sacrebleu's defaults (13a tokens)."""
    import sacrebleu  # imported here: only evaluation needs it

    _check_corpora(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Percentage ``[0, 100]`` of hypotheses equal to their reference (after stripping ends)."""
    _check_corpora(hypotheses, references)
    return 100.0 * sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / len(hypotheses)
