r"""Length-bucketed batches for ragged examples (sequences of very different lengths).

A flat path-graph batch costs what its tokens cost, but padded baselines and the fused dense
kernel pay for the longest example of a batch: batching examples of similar length keeps both
cheap while every epoch still sees different batches.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["LengthBucketSampler"]


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


