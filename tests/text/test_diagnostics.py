"""Warnings about data a model cannot learn (diagnostics.py)."""
import pytest

from graphattn.text.data import ParallelDataset
from graphattn.text.diagnostics import data_warnings, empty_warning
from graphattn.text.tokenizer import Tokenizer, tokenize

# English -> Dutch number words: Dutch writes every number as one compound word.
TRAIN = [("twenty-one", "eenentwintig"), ("three hundred and five", "driehonderdvijf"),
         ("forty-two", "tweeënveertig"), ("six hundred", "zeshonderd"), ("ninety-nine", "negenennegentig")]
VALID = [("six hundred and five", "zeshonderdvijf"), ("twenty-two", "tweeëntwintig")]  # English words all seen


def tokenizers(kind):
    return (Tokenizer.train([s for s, _ in TRAIN], kind, 300), Tokenizer.train([t for _, t in TRAIN], kind, 300))


def test_unknown_target_words_are_reported_with_their_rate():
    src, tgt = tokenizers("word")
    messages = data_warnings(src, tgt, VALID)
    # The reference: validation words not among the training words.
    seen = {w for _, t in TRAIN for w in tokenize(t)}
    valid_words = [w for _, t in VALID for w in tokenize(t)]
    rate = sum(w not in seen for w in valid_words) / len(valid_words)
    assert rate == 1.0
    assert messages == [f"{100 * rate:.1f}% of the target validation tokens are unknown (<unk>) to the word tokenizer "
                        "trained on the training text: no model can learn them. A byte-level subword tokenizer "
                        "has no unknown tokens: --tokenizer bpe (or unigram)"]


def test_source_side_and_byte_level_tokenizers():
    src, tgt = tokenizers("word")
    messages = data_warnings(src, tgt, [("seventy-seven", "eenentwintig")])
    assert [m.split(" of the ")[1].split()[0] for m in messages] == ["source"]  # "seventy", "seven" are unseen
    assert data_warnings(*tokenizers("bpe"), VALID) == []
    assert data_warnings(*tokenizers("unigram"), VALID) == []


def test_language_model_text():
    tok = Tokenizer.train(["abc abc"], "char")
    assert data_warnings(None, tok, valid_texts=["abc"]) == []
    assert "50.0% of the text validation tokens" in data_warnings(None, tok, valid_texts=["axyb"])[0]


def test_cut_sentences_are_reported():
    src, tgt = tokenizers("bpe")
    max_len = 4
    train_set = ParallelDataset(TRAIN, src, tgt, max_len=max_len)
    lengths = [len(tgt.encode(t)) for _, t in VALID]  # target + <eos>
    messages = data_warnings(src, tgt, VALID, train_set, max_len)
    assert train_set.truncated > 0
    assert messages[0] == (f"{train_set.truncated} of {len(TRAIN)} training pairs are longer than --max-len (4) "
                           "tokens and were cut: raise --max-len to learn them whole")
    assert messages[1] == (f"{sum(n > max_len for n in lengths)} of {len(VALID)} validation targets need more than "
                           f"--max-len (4) tokens (up to {max(lengths)}): their translations will be cut")
    assert data_warnings(src, tgt, VALID, ParallelDataset(TRAIN, src, tgt, max_len=64), 64) == []


@pytest.mark.parametrize("empty, total, warns", [(0, 100, False), (1, 100, False), (2, 100, True), (5, 5, True),
                                                 (0, 0, False)])
def test_empty_translations(empty, total, warns):
    message = empty_warning(empty, total)
    assert (message is not None) == warns
    if warns:
        assert message.startswith(f"{empty} of {total} translations are empty")
