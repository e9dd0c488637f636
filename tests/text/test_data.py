import random

import pytest
import sacrebleu
import torch

from graphattn.loader import LengthBucketSampler
from graphattn.text.data import ParallelDataset, collate, read_parallel, split_pairs
from graphattn.text.metrics import bleu, exact_match
from graphattn.text.numbers import core_numbers, normalize, number_pairs, number_splits, numbers_task
from graphattn.text.vocab import BOS_ID, EOS_ID, HYPHEN, PAD_ID, UNK_ID, Vocab, detokenize, tokenize

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
                      test_size=rest - rest // 3 - rest // 4)
    assert sorted(s["train"] + s["valid"] + s["test"]) == list(range(mx + 1))


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
    vocab_en = Vocab.build(en for en, _ in task["train"])
    vocab_fr = Vocab.build(fr for _, fr in task["train"])
    for en, fr in task["valid"] + task["test"]:
        assert UNK_ID not in vocab_en.encode(en) and UNK_ID not in vocab_fr.encode(fr)


def test_split_errors():
    with pytest.raises(ValueError, match="core numbers"):
        number_splits(train_size=10)
    with pytest.raises(ValueError, match="distinct numbers"):
        number_splits(max_number=200, train_size=150, valid_size=50, test_size=50)
    with pytest.raises(ValueError, match="valid_size"):
        number_splits(valid_size=-1)


# --- tokenisation and vocabulary -------------------------------------------------------------


def test_tokenize_hyphens():
    assert tokenize("quatre-vingt-dix-sept") == ["quatre", HYPHEN, "vingt", HYPHEN, "dix", HYPHEN, "sept"]
    assert tokenize("a - b -c d-") == ["a", "-", "b", "-c", "d-"]  # only inner hyphens split
    for s in ["a - b -c d-", "x-y z", "", "quatre-vingts"]:
        assert detokenize(tokenize(s)) == s


def test_tokenize_round_trip_thousands():
    rng = random.Random(0)
    numbers = [rng.randrange(1_000_000) for _ in range(2_000)] + list(range(101))
    for en, fr in number_pairs(numbers):
        for s in (en, fr):
            assert detokenize(tokenize(s)) == s


def test_vocab_round_trip(task):
    vocab = Vocab.build(fr for _, fr in task["train"])
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert len(vocab) == len(vocab.itos) == len(vocab.stoi)
    for _, fr in task["valid"]:
        ids = vocab.encode(fr)
        assert ids[-1] == EOS_ID and UNK_ID not in ids
        assert vocab.decode(ids) == fr
        assert vocab.decode(torch.tensor(vocab.encode(fr, add_bos=True))) == fr
    assert vocab.encode("un", add_eos=False) == [vocab.stoi["un"]]


def test_vocab_unknown_and_specials():
    vocab = Vocab.build(["a b b", "b c"], min_freq=2)
    assert vocab.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "b"]
    assert vocab.encode("a b zzz") == [UNK_ID, 4, UNK_ID, EOS_ID]
    assert vocab.decode([BOS_ID, 4, UNK_ID, EOS_ID, 4, PAD_ID]) == "b <unk>"  # stops at eos
    assert vocab.decode([BOS_ID, 4, EOS_ID], strip_special=False) == "<bos> b <eos>"
    with pytest.raises(ValueError, match="must start with"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        Vocab(["<pad>", "<bos>", "<eos>", "<unk>", "a", "a"])


def test_vocab_build_is_deterministic():
    # Ties in frequency break alphabetically, so the order of the corpus does not matter.
    assert Vocab.build(["c b a", "a"]).itos == Vocab.build(["a", "a b c"]).itos


def test_vocab_through_torch_save(tmp_path, task):
    vocab = Vocab.build(en for en, _ in task["train"])
    path = tmp_path / "ckpt.pt"
    torch.save({"vocab": vocab.to_dict(), "w": torch.zeros(2)}, path)
    loaded = Vocab.from_dict(torch.load(path, weights_only=True)["vocab"])
    assert loaded.itos == vocab.itos
    en = task["test"][0][0]
    assert loaded.encode(en) == vocab.encode(en)
    with pytest.raises(ValueError, match="tokens"):
        Vocab.from_dict({"itos": []})


# --- datasets and files ----------------------------------------------------------------------


def test_parallel_dataset(task):
    sv = Vocab.build(en for en, _ in task["train"])
    tv = Vocab.build(fr for _, fr in task["train"])
    ds = ParallelDataset(task["valid"], sv, tv)
    assert len(ds) == 100
    src, tgt = ds[3]
    assert src.dtype == tgt.dtype == torch.long
    assert src[-1] == EOS_ID and BOS_ID not in tgt.tolist() and EOS_ID not in tgt.tolist()
    assert sv.decode(src) == task["valid"][3][0] and tv.decode(tgt) == task["valid"][3][1]
    assert ds.lengths[3] == max(len(src), len(tgt) + 1)


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


def random_lengths(n=1_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 60, (n,), generator=g).tolist()


def spread(batches, lengths):
    return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)


@pytest.mark.parametrize("kwargs", [dict(batch_size=16), dict(max_tokens=400), dict(batch_size=16, max_tokens=300)])
def test_sampler_every_index_once_and_bucketed(kwargs):
    lengths = random_lengths()
    sampler = LengthBucketSampler(lengths, bucket_batches=10, **kwargs)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    if "batch_size" in kwargs:
        assert all(len(b) <= kwargs["batch_size"] for b in batches)
    if "max_tokens" in kwargs:
        assert all(len(b) * max(lengths[i] for i in b) <= kwargs["max_tokens"] for b in batches)
    # Random batches of the same sizes spread over most of 1..59; bucketed ones barely at all.
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1)).tolist()
    sizes, random_batches = [len(b) for b in batches], []
    for s in sizes:
        random_batches.append(perm[:s])
        perm = perm[s:]
    assert spread(batches, lengths) < 0.2 * spread(random_batches, lengths)


def test_sampler_max_tokens_oversized_example():
    batches = list(LengthBucketSampler([3, 100, 3, 3], max_tokens=10, shuffle=False))
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_sampler_epochs():
    lengths = random_lengths()
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=0)
    e0 = list(sampler)
    assert list(sampler) == e0  # same epoch, same order
    sampler.set_epoch(1)
    e1 = list(sampler)
    assert e1 != e0 and sorted(map(sorted, e1)) != sorted(map(sorted, e0))  # new order and new batches
    again = LengthBucketSampler(lengths, batch_size=16, seed=0)
    again.set_epoch(1)
    assert list(again) == e1
    assert list(LengthBucketSampler(lengths, batch_size=16, seed=5)) != e0
    fixed = LengthBucketSampler(lengths, batch_size=16, shuffle=False)
    first = list(fixed)
    fixed.set_epoch(3)
    assert list(fixed) == first


def test_sampler_drop_last():
    lengths = random_lengths(n=100)
    keep = list(LengthBucketSampler(lengths, batch_size=16, shuffle=False))
    drop = list(LengthBucketSampler(lengths, batch_size=16, shuffle=False, drop_last=True))
    assert len(keep) == 7 and len(drop) == 6 and all(len(b) == 16 for b in drop)


@pytest.mark.parametrize("n", [96, 100])  # no batch of 1: no merging
def test_sampler_replicas_share_each_global_batch(n):
    lengths = random_lengths(n=n)
    full = list(LengthBucketSampler(lengths, batch_size=16, seed=2))
    shares = [list(LengthBucketSampler(lengths, batch_size=16, seed=2, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(full)  # the same steps as one process
    for step, batch in enumerate(full):
        assert shares[0][step] + shares[1][step] != batch  # interleaved, not cut in halves
        assert sorted(shares[0][step] + shares[1][step]) == sorted(batch)
        assert abs(len(shares[0][step]) - len(shares[1][step])) <= 1
        # Dealt from a length-sorted batch: the two shares have about the same longest example.
        longest = [max(lengths[i] for i in s[step]) for s in shares]
        assert abs(longest[0] - longest[1]) <= max(lengths[i] for i in batch) - min(lengths[i] for i in batch)


def test_sampler_merges_a_batch_smaller_than_the_replicas():
    lengths = list(range(1, 34))  # 33 examples, batch 16: the last batch has 1, fewer than 2 ranks
    shares = [list(LengthBucketSampler(lengths, batch_size=16, shuffle=False, num_replicas=2, rank=r))
              for r in range(2)]
    assert [len(b) for b in shares[0]] == [8, 9] and [len(b) for b in shares[1]] == [8, 8]
    assert sorted(i for s in shares for b in s for i in b) == list(range(33))
    with pytest.raises(ValueError, match="num_replicas=4"):
        LengthBucketSampler([1, 2, 3], batch_size=1, num_replicas=4, rank=0)


def test_sampler_errors():
    with pytest.raises(ValueError, match="batch_size or max_tokens"):
        LengthBucketSampler([1, 2])
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketSampler([1, 2], batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        LengthBucketSampler([1, 2], batch_size=1, num_replicas=2, rank=2)


def test_dataloader_end_to_end(task):
    sv = Vocab.build(en for en, _ in task["train"])
    tv = Vocab.build(fr for _, fr in task["train"])
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
    hyps = ["the cat sat on the mat", "vingt et un", "quatre-vingt-dix-sept moutons"]
    refs = ["the cat sat on a mat", "vingt et un", "quatre-vingt-dix-sept chèvres"]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert 0 < bleu(hyps, refs) < 100
    assert bleu(refs, refs) == pytest.approx(100.0)


def test_exact_match():
    assert exact_match(["a b", "c", "d "], ["a b", "x", "d"]) == pytest.approx(200 / 3)
    assert exact_match(["a"], ["a"]) == 100.0 and exact_match(["a"], ["b"]) == 0.0
    with pytest.raises(ValueError, match="same length"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        bleu([], [])
