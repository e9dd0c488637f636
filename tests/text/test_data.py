import pytest
import sacrebleu
import torch

from graphattn.loader import LengthBucketSampler
from graphattn.text.data import ParallelDataset, collate, read_lines, read_parallel, split_pairs
from graphattn.text.metrics import bleu, bleu_tokenize, exact_match
from graphattn.text.numbers import SHOWCASE, core_numbers, normalize, number_pairs, number_splits, numbers_task, round_parts
from graphattn.text.tokenizer import BOS_ID, EOS_ID, UNK_ID, Tokenizer, tokenize

SMALL = dict(max_number=999_999, train_size=600, valid_size=100, test_size=100)


@pytest.fixture(scope="module")
def task():
    return numbers_task(seed=0, **SMALL)


# --- the numbers task ------------------------------------------------------------------------


def test_known_translations():
    pairs = dict(zip([997, 21, 80, 71, 200, 1000, 1234, 80_000, 0],
                     number_pairs([997, 21, 80, 71, 200, 1000, 1234, 80_000, 0])))
    assert pairs[997] == ("nine hundred and ninety-seven", "neuf cent quatre-vingt-dix-sept")
    assert pairs[21] == ("twenty-one", "vingt et un")
    assert pairs[80] == ("eighty", "quatre-vingts")
    assert pairs[71] == ("seventy-one", "soixante et onze")
    assert pairs[200] == ("two hundred", "deux cents")
    assert pairs[1000] == ("one thousand", "mille")
    # num2words writes "one thousand, two hundred ..." in English: the comma is normalised away.
    assert pairs[1234] == ("one thousand two hundred and thirty-four", "mille deux cent trente-quatre")
    assert pairs[80_000] == ("eighty thousand", "quatre-vingt mille")
    assert pairs[0] == ("zero", "zéro")


def test_normalize():
    assert normalize("  One Thousand,  two\tHundred ") == "one thousand two hundred"


@pytest.mark.parametrize("seed", [0, 1])
def test_splits_disjoint_and_sized(seed):
    s = number_splits(seed, **SMALL)
    assert [len(s[k]) for k in ("train", "valid", "test")] == [600, 100, 100]
    sets = [set(s[k]) for k in ("train", "valid", "test")]
    assert sum(map(len, sets)) == len(set().union(*sets)) == 800  # no repeats within or across
    assert all(0 <= n <= SMALL["max_number"] for x in sets for n in x)
    assert set(core_numbers(SMALL["max_number"])) <= sets[0]


def test_splits_cover_range_exactly():
    # Drawing without replacement from everything but the core must reach every number once.
    mx = 2_500
    c = len(core_numbers(mx))
    rest = mx + 1 - c
    s = number_splits(3, mx, train_size=c + rest // 3, valid_size=rest // 4,
                      test_size=rest - rest // 3 - rest // 4, held_out=())
    assert sorted(s["train"] + s["valid"] + s["test"]) == list(range(mx + 1))
    assert s["test_round"] == []  # nothing is left for it


def test_showcase_numbers_are_in_no_split():
    s = number_splits(0, **SMALL)
    assert all(set(v).isdisjoint(SHOWCASE) for v in s.values())
    mx = 2_500  # splits that take every number they may: all but the showcase's 412 and 1001
    c, rest = len(core_numbers(mx)), mx + 1 - len(core_numbers(mx)) - 2
    s = number_splits(3, mx, train_size=c + rest // 3, valid_size=rest // 4, test_size=rest - rest // 3 - rest // 4)
    assert sorted(s["train"] + s["valid"] + s["test"]) == sorted(set(range(mx + 1)) - {412, 1_001})


def test_task_sentences_disjoint(task):
    src = [{en for en, _ in task[k]} for k in ("train", "valid", "test")]
    assert sum(map(len, src)) == len(set().union(*src)) == 800


def test_task_deterministic_by_seed(task):
    assert numbers_task(seed=0, **SMALL) == task
    other = numbers_task(seed=1, **SMALL)
    assert other["valid"] != task["valid"] and other["test"] != task["test"]
    assert number_splits(1, **SMALL) != number_splits(2, **SMALL)


@pytest.mark.parametrize("max_number", [150, 999, 99_999, 999_999])
def test_valid_test_tokens_in_train(max_number):
    core = len(core_numbers(max_number))
    size = min(30, (max_number + 1 - core) // 3)
    task = numbers_task(seed=0, max_number=max_number, train_size=core + size,
                        valid_size=size, test_size=size)
    vocab_en = Tokenizer.train((en for en, _ in task["train"]), "word")
    vocab_fr = Tokenizer.train((fr for _, fr in task["train"]), "word")
    for en, fr in task["valid"] + task["test"] + task["test_round"]:
        assert UNK_ID not in vocab_en.encode(en) and UNK_ID not in vocab_fr.encode(fr)


def test_round_numbers_are_represented_in_train_and_tested_apart():
    s = number_splits(0, train_size=20_000, valid_size=500, test_size=1_000)
    sets = {k: set(v) for k, v in s.items()}
    assert len(s["test_round"]) == 1_000 == len(sets["test_round"])
    assert all(sets[a].isdisjoint(sets[b]) for a in sets for b in sets if a < b)
    rounds = set(round_parts(999))
    assert all(n // 1000 in rounds or n % 1000 in rounds for n in s["test_round"])
    # The forms uniform draws hit once in a thousand numbers: "x thousand" alone, "one thousand y".
    train = [n for n in s["train"] if n >= 1000]
    assert sum(n % 1000 == 0 for n in train) / len(train) > 0.03
    assert sum(n // 1000 == 1 for n in train) / len(train) > 0.02
    uniform = number_splits(0, train_size=20_000, valid_size=500, test_size=1_000, round_share=0.0)["train"]
    assert sum(n % 1000 == 0 for n in uniform if n >= 1000) / len(uniform) < 0.005
    # valid and test stay uniform draws: their share of round thousands is that of the range
    assert sum(n % 1000 == 0 for n in s["test"] + s["valid"]) < 10


def test_split_errors():
    with pytest.raises(ValueError, match="core numbers"):
        number_splits(train_size=10)
    with pytest.raises(ValueError, match="distinct numbers"):
        number_splits(max_number=200, train_size=150, valid_size=50, test_size=50)
    with pytest.raises(ValueError, match="valid_size"):
        number_splits(valid_size=-1)
    with pytest.raises(ValueError, match="round_share"):
        number_splits(round_share=1.5)


# --- datasets and files ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_parallel_dataset(task, kind):
    sv = Tokenizer.train((en for en, _ in task["train"]), kind, 400)
    tv = Tokenizer.train((fr for _, fr in task["train"]), kind, 400)
    ds = ParallelDataset(task["valid"], sv, tv)
    assert len(ds) == 100 and ds.truncated == 0
    src, tgt = ds[3]
    assert src.dtype == tgt.dtype == torch.long
    assert src[-1] == EOS_ID and BOS_ID not in tgt.tolist() and EOS_ID not in tgt.tolist()
    assert sv.decode(src) == task["valid"][3][0] and tv.decode(tgt) == task["valid"][3][1]
    assert ds.lengths[3] == max(len(src), len(tgt) + 1)


def test_parallel_dataset_cuts_at_max_len(task):
    sv = Tokenizer.train((en for en, _ in task["train"]), "word")
    tv = Tokenizer.train((fr for _, fr in task["train"]), "word")
    max_len = 6
    ds = ParallelDataset(task["valid"], sv, tv, max_len=max_len)
    src_lengths = [len(tokenize(en)) for en, _ in task["valid"]]
    tgt_lengths = [len(tokenize(fr)) for _, fr in task["valid"]]
    assert ds.truncated == sum(s > max_len - 1 or t > max_len - 1 for s, t in zip(src_lengths, tgt_lengths)) > 0
    for (src, tgt), n_src, n_tgt in zip(ds, src_lengths, tgt_lengths):
        assert len(src) == min(n_src, max_len - 1) + 1 and src[-1] == EOS_ID
        assert len(tgt) == min(n_tgt, max_len - 1)
    with pytest.raises(ValueError, match="max_len"):
        ParallelDataset(task["valid"], sv, tv, max_len=1)


def test_read_parallel(tmp_path):
    src, tgt = tmp_path / "a.en", tmp_path / "a.fr"
    src.write_text("one\n  two   words \n\nthree\n", encoding="utf-8")
    tgt.write_text("un\ndeux mots\nvide\ntrois", encoding="utf-8")  # no final newline
    # The pair whose source line is empty is skipped; whitespace is collapsed.
    assert read_parallel(src, tgt) == [("one", "un"), ("two words", "deux mots"), ("three", "trois")]


def test_read_parallel_errors(tmp_path):
    src, tgt = tmp_path / "a.en", tmp_path / "a.fr"
    src.write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="a.fr"):
        read_parallel(src, tgt)
    tgt.write_text("un\ndeux\ntrois\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"2 in .*a\.en.* 3 in .*a\.fr"):
        read_parallel(src, tgt)
    tgt.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.fr' is empty"):
        read_parallel(src, tgt)
    tgt.write_bytes("un\ndeux\ntr\u00e8s bien\n".encode("latin-1"))  # not UTF-8 on line 3, 3rd byte
    with pytest.raises(ValueError, match=r"a\.fr' is not UTF-8 text: line 3, byte 3 is b'\\xe8'"):
        read_parallel(src, tgt)


def test_read_lines_keeps_files_aligned(tmp_path):
    path = tmp_path / "a.txt"
    # A byte-order mark, CRLF ends and a line separator (U+2028) inside a line: still 3 lines.
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\xe2\x80\xa8halves\r\n\xce\xb1\xce\xb2\n")
    assert read_lines(path) == ["one", "two halves", "\u03b1\u03b2"]


def test_read_parallel_warns_about_skipped_pairs(tmp_path, caplog):
    src, tgt = tmp_path / "a.en", tmp_path / "a.fr"
    src.write_text("one\n\nthree\n", encoding="utf-8")
    tgt.write_text("un\ndeux\n\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="graphattn.text.data"):
        assert read_parallel(src, tgt) == [("one", "un")]
    assert "skipped 2 line pair(s) with an empty side (line 2, 3)" in caplog.text


def test_split_pairs():
    pairs = [(str(i), str(-i)) for i in range(50)]
    train, valid = split_pairs(pairs, 0.2, seed=0)
    assert len(valid) == 10 and len(train) == 40
    assert sorted(train + valid) == sorted(pairs)
    assert split_pairs(pairs, 0.2, seed=0) == (train, valid)
    assert split_pairs(pairs, 0.2, seed=1)[1] != valid
    with pytest.raises(ValueError, match="valid_fraction"):
        split_pairs(pairs, 1.5)


# --- batching --------------------------------------------------------------------------------


def test_collate_hand_built():
    batch = [(torch.tensor([5, 6, 2]), torch.tensor([7, 8])),
             (torch.tensor([9, 2]), torch.tensor([10, 11, 12]))]
    b = collate(batch)
    assert torch.equal(b["src"], torch.tensor([[5, 6, 2], [9, 2, 0]]))
    assert torch.equal(b["src_lengths"], torch.tensor([3, 2]))
    assert torch.equal(b["src_padding_mask"], torch.tensor([[False, False, False], [False, False, True]]))
    assert torch.equal(b["tgt_in"], torch.tensor([[1, 7, 8, 0], [1, 10, 11, 12]]))
    assert torch.equal(b["tgt_out"], torch.tensor([[7, 8, 2, 0], [10, 11, 12, 2]]))
    assert torch.equal(b["tgt_lengths"], torch.tensor([3, 4]))
    assert torch.equal(b["tgt_padding_mask"], torch.tensor([[False, False, False, True], [False] * 4]))
    # Another pad id pads with it; masks still come from the lengths.
    b = collate(batch, pad_id=-1)
    assert b["src"][1, 2] == -1 and b["tgt_out"][0, 3] == -1 and b["src_padding_mask"][1, 2]


def test_dataloader_end_to_end(task):
    sv = Tokenizer.train((en for en, _ in task["train"]), "word")
    tv = Tokenizer.train((fr for _, fr in task["train"]), "word")
    ds = ParallelDataset(task["train"], sv, tv)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=LengthBucketSampler(ds.lengths, max_tokens=512),
                                         collate_fn=collate)
    seen = 0
    for b in loader:
        B, T = b["tgt_in"].shape
        assert b["tgt_out"].shape == (B, T) and b["src"].shape[0] == B
        assert (b["tgt_in"][:, 0] == BOS_ID).all()
        assert (b["tgt_out"].gather(1, (b["tgt_lengths"] - 1)[:, None]) == EOS_ID).all()
        seen += B
    assert seen == len(ds)


# --- metrics ---------------------------------------------------------------------------------


def test_bleu_matches_sacrebleu():
    hyps = ["the cat sat on the mat", "vingt et un mille", "quatre-vingt-dix-sept moutons et chèvres"]
    refs = ["the cat sat on a mat", "vingt et un mille", "quatre-vingt-dix-sept chèvres et moutons"]
    assert bleu_tokenize(refs) == "13a"  # 4 words a sentence on average
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert 0 < bleu(hyps, refs) < 100
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(hyps, refs, "char") == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score)


def test_bleu_of_one_word_sentences_counts_characters():
    refs = ["tweehonderdvijf", "tachtigduizend", "三十三万五千七百三十一"]  # Dutch and Japanese numbers
    hyps = ["tweehonderdvier", "tachtigduizend", "三十三万五千七百三十一"]
    assert bleu_tokenize(refs) == "char"
    assert sacrebleu.corpus_bleu(refs, [refs]).score == 0.0  # word 4-grams: none to count, even when perfect
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score)
    assert 50 < bleu(hyps, refs) < 100


def test_exact_match():
    assert exact_match(["a b", "c", "d "], ["a b", "x", "d"]) == pytest.approx(200 / 3)
    assert exact_match(["a"], ["a"]) == 100.0 and exact_match(["a"], ["b"]) == 0.0
    with pytest.raises(ValueError, match="same length"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        bleu([], [])
