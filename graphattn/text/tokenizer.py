r"""Tokenizers of any language, trained on the training text with Hugging Face ``tokenizers``.

Four kinds behind one interface (:class:`Tokenizer`), all with the special tokens
``<pad>=0, <bos>=1, <eos>=2, <unk>=3``:

* ``"bpe"``: byte-pair encoding over bytes (GPT-2's byte-level pre-tokenization). Every UTF-8
  string is encoded without ``<unk>``: a character never seen in training falls back to its
  bytes, and decoding gives back exactly the text that was encoded (spaces, punctuation,
  diacritics, any script, emoji).
* ``"unigram"``: the unigram language model of SentencePiece, over the same bytes: the same
  guarantees, segmentation chosen by likelihood instead of merges.
* ``"char"``: one token a character seen in training; others become ``<unk>``.
* ``"word"``: whitespace-separated words, with an inner hyphen as its own token ``@-@``
  (:func:`tokenize`): what the numbers demo uses, and how checkpoints of version 1 tokenized.

A tokenizer is stored as its JSON string (:meth:`Tokenizer.to_dict`), a plain ``str``, so a
checkpoint holding it still loads with ``torch.load(..., weights_only=True)``.

    >>> tok = Tokenizer.train(["Ça coûte 3 €, très cher !", "Привет, мир"], "bpe", vocab_size=300)
    >>> text = "Ça coûte 3 €… 日本"
    >>> tok.decode(tok.encode(text)) == text
    True
    >>> tokenize("quatre-vingt-dix-sept")
    ['quatre', '@-@', 'vingt', '@-@', 'dix', '@-@', 'sept']
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from numbers import Integral
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["KINDS", "SPECIALS", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "HYPHEN", "tokenize", "detokenize",
           "Tokenizer"]

KINDS = ("bpe", "unigram", "char", "word")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

# A hyphen inside a word becomes its own token, written as Moses' "@-@" so that detokenisation
# knows to glue it to both neighbours; a free-standing "-" stays "-". Words generalise across
# numbers ("vingt" in "vingt-deux" and "quatre-vingts"); whole hyphenated forms would not.
HYPHEN = "@-@"
_INNER_HYPHEN = r"(?<=[^\s-])-(?=[^\s-])"


def tokenize(text: str) -> list[str]:
    """Word tokens: split on whitespace, and inner hyphens into :data:`HYPHEN` tokens.

    ``detokenize(tokenize(s)) == s`` for every ``s`` with single spaces and no leading or
    trailing whitespace (what :func:`~graphattn.text.numbers.normalize` and
    :func:`~graphattn.text.data.read_parallel` produce).
    """
    return re.sub(_INNER_HYPHEN, f" {HYPHEN} ", text).split()


def detokenize(tokens: Sequence[str]) -> str:
    """Inverse of :func:`tokenize`: join with spaces and glue :data:`HYPHEN` to both neighbours."""
    return " ".join(tokens).replace(f" {HYPHEN} ", "-").replace(HYPHEN, "-").strip()


def _hf():
    import tokenizers  # imported here: only text tasks need it

    return tokenizers


def _word_level(vocab: dict, kind: str):
    """An HF ``WordLevel`` tokenizer for the ``word`` or ``char`` kind with the given token ids."""
    hf = _hf()
    tok = hf.Tokenizer(hf.models.WordLevel(vocab, unk_token="<unk>"))
    if kind == "word":
        # The same split as tokenize(): the normalizer isolates inner hyphens as " @-@ ".
        tok.normalizer = hf.normalizers.Replace(hf.Regex(_INNER_HYPHEN), f" {HYPHEN} ")
        tok.pre_tokenizer = hf.pre_tokenizers.WhitespaceSplit()
    else:  # every character, newlines and spaces included, is a token; decoding concatenates
        tok.pre_tokenizer = hf.pre_tokenizers.Split(hf.Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = hf.decoders.Fuse()
    tok.add_special_tokens(list(SPECIALS))
    return tok


def _byte_level(kind: str, vocab_size: int, min_frequency: int):
    """An untrained byte-level BPE or Unigram tokenizer and its trainer."""
    hf = _hf()
    model = hf.models.BPE() if kind == "bpe" else hf.models.Unigram()
    tok = hf.Tokenizer(model)
    # Byte-level: the 256 byte symbols are the alphabet, so nothing is ever unknown and decoding
    # is the exact inverse of encoding (no normalisation, no added prefix space).
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = hf.decoders.ByteLevel()
    common = dict(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                  initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    if kind == "bpe":
        trainer = hf.trainers.BpeTrainer(min_frequency=min_frequency, **common)
    else:
        trainer = hf.trainers.UnigramTrainer(unk_token="<unk>", **common)
    return tok, trainer


class Tokenizer:
    r"""Text <-> token ids, backed by a Hugging Face ``tokenizers.Tokenizer``.

    Build one with :meth:`train` (from the training text), :meth:`from_dict` (from a checkpoint)
    or :meth:`from_tokens` (a word list in id order, as checkpoints of version 1 stored it).

    Args:
        backend (tokenizers.Tokenizer): the trained Hugging Face tokenizer; its first four ids
            must be ``<pad>, <bos>, <eos>, <unk>``.
        kind (str): one of :data:`KINDS`.

    Ids: ``encode(text) -> list[int]`` and ``decode(ids) -> str``; a flat batch of sentences is
    ``torch.tensor`` of the concatenated ids with ``ptr [B + 1]``.
    """

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, backend, kind: str):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        found = [backend.id_to_token(i) for i in range(len(SPECIALS))]
        if tuple(found) != SPECIALS:
            raise ValueError(f"a tokenizer's first ids must be {list(SPECIALS)}, got {found}")
        # A literal "<eos>" in the text is text: encoded as its bytes (or words), never as the special.
        backend.encode_special_tokens = True
        self.backend, self.kind = backend, kind

    # ------------------------------------------------------------------------- building

    @classmethod
    def train(cls, texts: Iterable[str], kind: str = "bpe", vocab_size: Optional[int] = None,
              min_frequency: Optional[int] = None) -> "Tokenizer":
        """A tokenizer of ``kind`` trained on ``texts`` (an iterable of strings: sentences or documents).

        Args:
            texts (iterable of str): the training text.
            kind (str): one of :data:`KINDS`. (default: ``"bpe"``)
            vocab_size (int, optional): the most tokens, the four specials included. BPE and
                Unigram learn up to that many pieces (fewer when the text has no more to
                learn); ``word`` and ``char`` keep the most frequent ``vocab_size - 4`` tokens
                (ties broken alphabetically, so the same text always gives the same ids). The
                byte-level kinds need at least 260 (the specials and the 256 bytes).
                (default: 8000 for BPE and Unigram, every token for ``word`` and ``char``)
            min_frequency (int, optional): BPE merges only pairs seen at least this often.
                (default: 2 % of the number of texts, and at least 2)

        Why 2 %: a merge seen in fewer texts than that joins two pieces that are each common
        into a combination that is not. Where every sentence is one compound word (Dutch
        "driehonderdvijfendertigduizend": 335 000), unbounded merges make a token of nearly
        every combination of hundreds and units, which a model has to learn one by one; with
        the bound, BPE stops at "driehonderd", "vijfen", "dertigduizend". A 20 000-pair
        English -> Dutch run with a vocabulary of 1 000 reached 0 % exact match after 300
        steps; with the bound (352 tokens), 99 %.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        if isinstance(texts, (str, bytes)):  # iterating a string would train on its characters
            raise TypeError(f"texts must be an iterable of strings (sentences or documents), got one "
                            f"{type(texts).__name__}: wrap it in a list")
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"texts must be an iterable of strings, got {type(texts).__name__}") from None
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"texts must be strings, got {type(texts[bad]).__name__} at index {bad}")
        if not any(t.strip() for t in texts):
            what = "texts is empty" if not texts else f"the {len(texts)} texts are all empty or blank"
            raise ValueError(f"{what}: there is nothing to learn (a tokenizer of the special tokens alone "
                             f"would encode everything as <unk> or bytes)")
        if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
                                       or not len(SPECIALS) + 1 <= vocab_size < 2 ** 31):  # HF counts in 32 bits
            raise ValueError(f"vocab_size must be an int in [{len(SPECIALS) + 1}, 2**31), got {vocab_size!r}")
        if kind in ("word", "char"):
            # Counted here rather than by WordLevelTrainer, whose order among equal counts is
            # not fixed: ids must not depend on a hash seed.
            counts = Counter(tok for text in texts for tok in (tokenize(text) if kind == "word" else text))
            kept = sorted((t for t in counts if t not in SPECIALS), key=lambda t: (-counts[t], t))
            keep = None if vocab_size is None else vocab_size - len(SPECIALS)
            return cls.from_tokens(list(SPECIALS) + kept[:keep], kind)
        vocab_size = 8000 if vocab_size is None else vocab_size
        if vocab_size < 260:
            raise ValueError(f"vocab_size of a byte-level {kind} tokenizer must be >= 260 (4 specials and "
                             f"256 bytes), got {vocab_size}")
        min_frequency = max(2, round(0.02 * len(texts))) if min_frequency is None else min_frequency
        backend, trainer = _byte_level(kind, vocab_size, min_frequency)
        backend.train_from_iterator(texts, trainer)
        return cls(backend, kind)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], kind: str = "word") -> "Tokenizer":
        """A ``word`` (or ``char``) tokenizer whose token ``i`` is ``tokens[i]``.

        ``tokens`` must start with the four specials and be distinct: what a version-1
        checkpoint stored as ``{"tokens": [...]}``, which therefore tokenizes as it did.
        """
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"tokens must start with {list(SPECIALS)}, got {tokens[:len(SPECIALS)]}")
        if len(set(tokens)) != len(tokens):
            dup = [t for t, c in Counter(tokens).items() if c > 1]
            raise ValueError(f"tokens must be distinct, got duplicates {dup[:5]}")
        if kind not in ("word", "char"):
            raise ValueError(f"from_tokens builds 'word' or 'char' tokenizers, got {kind!r}")
        return cls(_word_level({t: i for i, t in enumerate(tokens)}, kind), kind)

    def to_dict(self) -> dict:
        """``{"kind": str, "json": str}``: plain strings, so ``torch.load(weights_only=True)`` loads it."""
        return {"kind": self.kind, "json": self.backend.to_str()}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        """Inverse of :meth:`to_dict`; also reads version 1's ``{"tokens": [...]}`` word vocabularies."""
        if isinstance(d, dict) and "tokens" in d:
            return cls.from_tokens(d["tokens"], "word")
        if not isinstance(d, dict) or not isinstance(d.get("json"), str) or d.get("kind") not in KINDS:
            raise ValueError(f"expected a dict with 'kind' in {list(KINDS)} and a 'json' string (from "
                             f"Tokenizer.to_dict), got {type(d).__name__} with keys {sorted(d) if isinstance(d, dict) else []}")
        try:
            backend = _hf().Tokenizer.from_str(d["json"])
        except Exception as e:  # the Rust side raises its own Exception type for bad JSON
            raise ValueError(f"the tokenizer's JSON does not load: {str(e).splitlines()[0] if str(e) else e!r}") from None
        return cls(backend, d["kind"])

    # ------------------------------------------------------------------------- use

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, the four specials included."""
        return len(self)

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind!r}, vocab_size={len(self)})"

    def __eq__(self, other) -> bool:
        """Same kind and the same token ids (a Unigram piece's score may differ in its last bit
        after a trip through JSON, which changes no segmentation worth comparing)."""
        return (isinstance(other, Tokenizer) and self.kind == other.kind
                and self.backend.get_vocab(with_added_tokens=True) == other.backend.get_vocab(with_added_tokens=True))

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_bos``/``add_eos`` framed by ``<bos>``/``<eos>``."""
        return self.encode_batch([text], add_bos, add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = True) -> list[list[int]]:
        """:meth:`encode` of every text (Hugging Face encodes a batch in parallel, in Rust)."""
        texts = list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"texts must be strings, got {type(texts[bad]).__name__} at index {bad}")
        head, tail = [BOS_ID] if add_bos else [], [EOS_ID] if add_eos else []
        return [head + e.ids + tail for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Union[Sequence[int], Tensor], strip_special: bool = True) -> str:
        """Text of ``ids`` (list or 1-D tensor ``[T]``).

        With ``strip_special``, ``<pad>``/``<bos>`` are dropped and decoding stops at the first
        ``<eos>`` (what a decoder emits after it is not part of the output); ``<unk>`` stays.
        """
        ids = self._ids(ids)
        if strip_special:
            ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
            ids = [i for i in ids if i not in (PAD_ID, BOS_ID)]
        if self.kind == "word":
            # HF has no decoder that glues a token to both neighbours (the "@-@" hyphen).
            return detokenize(self.tokens(ids))
        return self.backend.decode(ids, skip_special_tokens=False)

    def tokens(self, ids: Union[Sequence[int], Tensor], readable: bool = False) -> list[str]:
        """The token strings of ``ids``. Byte-level kinds show bytes as GPT-2's printable symbols
        (``ĠMÃ¤nner``) unless ``readable``, which decodes each token alone (`` Männer``; a token
        that holds part of a character shows the replacement character)."""
        pieces = [self.backend.id_to_token(i) for i in self._ids(ids)]
        if not readable or self.backend.decoder is None or self.kind == "word":
            return pieces
        return [self.backend.decoder.decode([piece]) for piece in pieces]

    def _ids(self, ids) -> list[int]:
        """``ids`` as a list of ints in ``[0, len(self))``, or a TypeError/ValueError naming them."""
        if isinstance(ids, Tensor):
            if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool or ids.dim() > 1:
                raise TypeError(f"ids must be a 1-D integer tensor [T] or a list of ints, got "
                                f"{ids.dtype} {tuple(ids.shape)}")
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"ids must be a list of ints or a 1-D integer tensor, got {type(ids).__name__}")
        ids = list(ids)
        bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, Integral)), None)
        if bad is not None:
            raise TypeError(f"ids must be ints, got {type(bad).__name__} {bad!r}")
        size = len(self)
        wrong = next((i for i in ids if not 0 <= i < size), None)
        if wrong is not None:
            raise ValueError(f"ids must be in [0, {size}), got {wrong}")
        return [int(i) for i in ids]

    def unknown_rate(self, texts: Iterable[str]) -> float:
        """Share of the tokens of ``texts`` that are ``<unk>`` (0 for byte-level kinds), in ``[0, 1]``."""
        ids = [i for seq in self.encode_batch(list(texts), add_eos=False) for i in seq]
        return sum(i == UNK_ID for i in ids) / len(ids) if ids else 0.0

