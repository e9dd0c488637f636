r"""Parallel text as datasets and flat batches.

Pipeline: :func:`~graphattn.text.numbers.numbers_task` (or :func:`read_parallel` +
:func:`split_pairs` for any other parallel text) -> :class:`~graphattn.text.vocab.Vocab` ->
:class:`ParallelDataset` -> batches of :class:`~graphattn.loader.LengthBucketSampler` ->
:func:`flat_collate` (path-graph batches, no padding) or :func:`collate` (padded).
"""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from graphattn.text.numbers import Pair
from graphattn.text.vocab import BOS_ID, EOS_ID, PAD_ID, Vocab
from graphattn.utils.batch import pack_sequences

__all__ = ["ParallelDataset", "read_parallel", "split_pairs", "collate", "FlatBatch", "flat_collate"]

PathLike = Union[str, os.PathLike]

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


class FlatBatch(NamedTuple):
    """Sentence pairs as flat path-graph batches: no padding anywhere."""

    src: Tensor  # [N_s] source ids, each sentence ending with EOS
    ptr_src: Tensor  # [B + 1]
    tgt_in: Tensor  # [N_t] BOS + target, the decoder input
    tgt_out: Tensor  # [N_t] target + EOS, the labels
    ptr_tgt: Tensor  # [B + 1]

    @property
    def num_tokens(self) -> int:
        return self.src.numel() + self.tgt_in.numel()

    def to(self, device) -> "FlatBatch":
        return FlatBatch(*(t.to(device) for t in self))


def flat_collate(items: Sequence[tuple[Tensor, Tensor]], bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> FlatBatch:
    """``(src_ids [S_b], tgt_ids [T_b])`` items of :class:`ParallelDataset` -> :class:`FlatBatch`."""
    bos, eos = torch.tensor([bos_id]), torch.tensor([eos_id])
    src, ptr_src = pack_sequences([s for s, _ in items])
    tgt_in, ptr_tgt = pack_sequences([torch.cat([bos, t]) for _, t in items])
    tgt_out, _ = pack_sequences([torch.cat([t, eos]) for _, t in items])
    return FlatBatch(src, ptr_src, tgt_in, tgt_out, ptr_tgt)
