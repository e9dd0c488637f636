"""Tokenizers (tokenizer.py): exact round trips in every script, ids, storage, version-1 word lists."""
import random

import pytest
import torch

from graphattn.text.numbers import number_pairs
from graphattn.text.tokenizer import (BOS_ID, EOS_ID, HYPHEN, PAD_ID, SPECIALS, UNK_ID, Tokenizer, detokenize,
                                      tokenize)

# Training text in several scripts; the test sentences hold characters it never shows (the byte
# fallback) and whitespace that a normalising tokenizer would lose.
CORPUS = [
    "Ça coûte 3,50 € — très cher ! Où est la boulangère ?",
    "Straße, Ökonomie, naïve façade; the café's «crème brûlée».",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "我爱自然语言处理。东京是日本的首都。",
    "emoji: 🎉🚀👍🏽 and ZWJ 👩‍👩‍👧 families",
    "plain ASCII text, with numbers 12345 and symbols #@$%^&*()",
] * 3
UNSEEN = [
    "Ærøskøbing — Œuvre «déjà vu» ½ ≠ ∑",
    "Щука и ёж: ЪЫЬ",
    "日本語の文章、카타카나 한국어",
    "🦄🧬 fuzzy 🇫🇷 flags",
    "  leading, double  spaces, tabs\tand trailing  ",
    "a <eos> <pad> literal specials",
]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def subword(request):
    return Tokenizer.train(CORPUS, request.param, vocab_size=400)


def test_subword_round_trip_is_exact_in_every_script(subword):
    for text in CORPUS + UNSEEN:
        ids = subword.encode(text)
        assert ids[-1] == EOS_ID and UNK_ID not in ids  # bytes fall back, nothing is unknown
        assert subword.decode(ids) == text
    assert subword.unknown_rate(UNSEEN) == 0.0


def test_subword_learns_pieces_longer_than_bytes(subword):
    text = CORPUS[2]
    assert len(subword.encode(text, add_eos=False)) < 0.7 * len(text.encode("utf-8"))
    assert len(subword) <= 400 and [subword.tokens([i])[0] for i in range(4)] == list(SPECIALS)


def test_readable_tokens_decode_each_piece():
    # a readable label is the text its piece adds: joined, they are the sentence again (BPE here
    # merges the bytes of each character; unigram may split one, whose halves show U+FFFD)
    text = "Zwei Männer gehen über die Straße."
    tokenizer = Tokenizer.train([text, "Ein Mann geht."] * 50, "bpe", vocab_size=300)
    ids = tokenizer.encode(text, add_eos=False)
    raw, readable = tokenizer.tokens(ids), tokenizer.tokens(ids, readable=True)
    assert any("Ã" in piece for piece in raw)  # byte-level symbols, as the vocabulary stores them
    assert len(readable) == len(ids) and "".join(readable) == text
    assert "Männer" in "|".join(readable) or " Männer" in readable


def test_char_round_trip_and_unknowns():
    tok = Tokenizer.train(CORPUS, "char", vocab_size=10_000)
    assert len(tok) == 4 + len(set("".join(CORPUS)))
    for text in CORPUS:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("Ж", add_eos=False) == [UNK_ID]  # never seen: unknown, no byte fallback
    assert tok.unknown_rate(["aЖ"]) == 0.5
    small = Tokenizer.train(["aaab", "ab c"], "char", vocab_size=6)
    assert small.tokens(range(len(small))) == list(SPECIALS) + ["a", "b"]  # most frequent first


def test_word_tokenizer_is_the_numbers_split():
    pairs = number_pairs(list(range(101)) + [1_001, 80_000, 997_080])
    tok = Tokenizer.train([fr for _, fr in pairs], "word")
    for _, fr in pairs:
        words = tokenize(fr)
        assert tok.tokens(tok.encode(fr, add_eos=False)) == words
        assert tok.decode(tok.encode(fr)) == fr == detokenize(words)
    assert tok.encode("vingt zzz", add_eos=False) == [tok.encode("vingt", add_eos=False)[0], UNK_ID]
    # Ties in frequency break alphabetically, so the order of the corpus does not matter.
    assert Tokenizer.train(["c b a", "a"], "word").to_dict() == Tokenizer.train(["a", "a b c"], "word").to_dict()
    assert Tokenizer.train(["a b b", "b c"], "word", vocab_size=5).tokens(range(5)) == list(SPECIALS) + ["b"]


def test_tokenize_hyphens():
    assert tokenize("quatre-vingt-dix-sept") == ["quatre", HYPHEN, "vingt", HYPHEN, "dix", HYPHEN, "sept"]
    assert tokenize("a - b -c d-") == ["a", "-", "b", "-c", "d-"]  # only inner hyphens split
    for s in ["a - b -c d-", "x-y z", "", "quatre-vingts"]:
        assert detokenize(tokenize(s)) == s
    rng = random.Random(0)
    for en, fr in number_pairs([rng.randrange(1_000_000) for _ in range(500)]):
        assert detokenize(tokenize(en)) == en and detokenize(tokenize(fr)) == fr


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char", "word"])
def test_specials_and_decoding_rules(kind):
    tok = Tokenizer.train(["a b b", "b c"] * 5, kind, vocab_size=300 if kind in ("bpe", "unigram") else 50)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    b = tok.encode("b", add_eos=False)
    assert tok.encode("b", add_bos=True) == [BOS_ID] + b + [EOS_ID]
    # <pad>/<bos> are dropped, decoding stops at the first <eos>; strip_special=False keeps all.
    assert tok.decode([BOS_ID, *b, EOS_ID, *b, PAD_ID]) == "b"
    assert tok.decode(torch.tensor([BOS_ID, *b])) == "b"
    assert "<eos>" in tok.decode([*b, EOS_ID], strip_special=False)
    with pytest.raises(ValueError, match=r"ids must be in \[0"):
        tok.tokens([len(tok)])
    with pytest.raises(TypeError, match="texts must be strings"):
        tok.encode_batch(["a", 3])


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char", "word"])
def test_stored_as_json_through_weights_only_load(tmp_path, kind):
    tok = Tokenizer.train(CORPUS, kind, vocab_size=350)
    path = tmp_path / "ckpt.pt"
    torch.save({"vocab": tok.to_dict(), "w": torch.zeros(2)}, path)
    stored = torch.load(path, weights_only=True)["vocab"]
    assert isinstance(stored["json"], str) and stored["kind"] == kind
    loaded = Tokenizer.from_dict(stored)
    assert loaded == tok and repr(loaded) == f"Tokenizer({kind!r}, vocab_size={len(tok)})"
    for text in UNSEEN:
        assert loaded.encode(text) == tok.encode(text)


def test_version_one_word_lists_tokenize_as_before():
    # What Vocab.to_dict() stored in version-1 checkpoints: the tokens in id order.
    tokens = list(SPECIALS) + ["vingt", HYPHEN, "quatre", "et", "un", "mille", "-"]
    tok = Tokenizer.from_dict({"tokens": tokens})
    text = "quatre-vingt et un mille - zzz"
    # The reference: the version-1 lookup, token by token.
    assert tok.encode(text) == [tokens.index(t) if t in tokens else UNK_ID for t in tokenize(text)] + [EOS_ID]
    assert tok.decode(tok.encode(text)) == "quatre-vingt et un mille - <unk>"
    with pytest.raises(ValueError, match="must start with"):
        Tokenizer.from_dict({"tokens": ["a", "b"]})
    with pytest.raises(ValueError, match="distinct"):
        Tokenizer.from_tokens(list(SPECIALS) + ["a", "a"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind must be one of"):
        Tokenizer.train(["a"], "sentencepiece")
    with pytest.raises(ValueError, match="vocab_size of a byte-level bpe tokenizer must be >= 260"):
        Tokenizer.train(["a"], "bpe", vocab_size=100)
    with pytest.raises(ValueError, match=r"vocab_size must be an int in \[5"):
        Tokenizer.train(["a"], "word", vocab_size=4)
    with pytest.raises(ValueError, match="'kind' in"):
        Tokenizer.from_dict({"kind": "bpe"})
    with pytest.raises(ValueError, match="JSON does not load"):
        Tokenizer.from_dict({"kind": "bpe", "json": "{not json"})


def test_bpe_merges_only_pairs_that_recur():
    # Dutch writes each number as one word: unbounded merges make tokens of whole combinations.
    from num2words import num2words

    texts = [num2words(n, lang="nl") for n in range(100, 1000)]
    bounded, unbounded = Tokenizer.train(texts, "bpe"), Tokenizer.train(texts, "bpe", min_frequency=2)
    assert len(bounded) < len(unbounded)
    word = "driehonderdzevenenveertig"  # 347
    pieces = [bounded.backend.decode([i]) for i in bounded.encode(word, add_eos=False)]
    assert "".join(pieces) == word and "driehonderd" in pieces  # 100 of the 900 texts hold it
    assert len(pieces) > len(unbounded.encode(word, add_eos=False))


@pytest.mark.parametrize("texts, exc, match", [
    ([], ValueError, "texts is empty"), (["", "  ", "\n"], ValueError, "all empty or blank"),
    ("a string", TypeError, "wrap it in a list"), (["ok", 3], TypeError, "texts must be strings, got int at index 1"),
    (7, TypeError, "texts must be an iterable")])
@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_train_refuses_what_holds_no_text(texts, exc, match, kind):
    with pytest.raises(exc, match=match):
        Tokenizer.train(texts, kind)


@pytest.mark.parametrize("ids, exc, match", [
    (torch.tensor([5.0, 6.0]), TypeError, "ids must be a 1-D integer tensor"), ([-1], ValueError, r"ids must be in \[0"),
    ([1.0], TypeError, "ids must be ints, got float"), ("abc", TypeError, "ids must be a list of ints"),
    (torch.zeros(2, 2, dtype=torch.long), TypeError, r"\(2, 2\)"), ([True], TypeError, "ids must be ints")])
def test_decode_refuses_what_are_not_ids(ids, exc, match):
    tok = Tokenizer.train(["hello world"] * 5, "char")
    with pytest.raises(exc, match=match):
        tok.decode(ids)
    with pytest.raises(exc, match=match):
        tok.tokens(ids)
