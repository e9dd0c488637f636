"""LengthBucketSampler: every example once, batches of similar length, shares for data-parallel ranks."""
import pytest
import torch

from graphattn.loader import LengthBucketSampler


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
