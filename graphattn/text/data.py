r"""Parallel text as datasets and flat batches.

Pipeline: :func:`~graphattn.text.numbers.numbers_task` (or :func:`read_parallel` +
:func:`split_pairs` for any other parallel text) -> a :class:`~graphattn.text.tokenizer.Tokenizer`
per side, trained on the training text -> :class:`ParallelDataset` -> batches of
:class:`~graphattn.loader.LengthBucketSampler` -> :func:`flat_collate` (path-graph batches, no
padding) or :func:`collate` (padded).

Files are read strictly (:func:`read_lines`): a missing or empty file, bytes that are not UTF-8
and parallel files of different lengths are refused with a ``ValueError`` that names the file
(and the line), before a run writes anything.
"""
from __future__ import annotations

import gzip
import logging
import os
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from graphattn.text.numbers import Pair
from graphattn.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from graphattn.utils.checks import check_file
from graphattn.utils.batch import pack_sequences

__all__ = ["ParallelDataset", "read_text", "read_lines", "read_parallel", "split_pairs", "collate", "FlatBatch", "flat_collate"]

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

# --- Datasets and files ------------------------------------------------------------------------


class ParallelDataset(Dataset):
    r"""Sentence pairs encoded once: item ``i`` is ``(src_ids [S], tgt_ids [T])``, both LongTensor.

    ``src_ids`` ends with ``<eos>``; ``tgt_ids`` has neither ``<bos>`` nor ``<eos>``: :func:`collate`
    adds them to make the decoder input and output.

    Args:
        pairs (list of (str, str)): source and target sentences.
        src_tokenizer, tgt_tokenizer (Tokenizer): the two sides' tokenizers (may be one).
        max_len (int, optional): longest sequence kept: sources are cut to ``max_len`` tokens
            (``<eos>`` included) and targets to ``max_len - 1`` (so that target + ``<eos>`` fits);
            :attr:`truncated` counts the pairs that lost tokens. (default: no limit)
    """

    def __init__(self, pairs: Sequence[Pair], src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer,
                 max_len: Optional[int] = None):
        if max_len is not None and (not isinstance(max_len, int) or max_len < 2):
            raise ValueError(f"max_len must be an int >= 2 or None, got {max_len!r}")
        self.pairs = list(pairs)
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        src = src_tokenizer.encode_batch([s for s, _ in self.pairs], add_eos=False)
        tgt = tgt_tokenizer.encode_batch([t for _, t in self.pairs], add_eos=False)
        limit = None if max_len is None else max_len - 1  # room for <eos> on both sides
        self.truncated = sum(limit is not None and (len(s) > limit or len(t) > limit) for s, t in zip(src, tgt))
        self.src = [torch.tensor(s[:limit] + [EOS_ID], dtype=torch.long) for s in src]
        self.tgt = [torch.tensor(t[:limit], dtype=torch.long) for t in tgt]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.src[i], self.tgt[i]

    @property
    def lengths(self) -> list[int]:
        """Padded length each example needs: ``max(S, T + 1)``, for :class:`LengthBucketSampler`."""
        return [max(len(s), len(t) + 1) for s, t in zip(self.src, self.tgt)]


def read_text(path: PathLike) -> str:
    """The text of a UTF-8 file (a byte-order mark is skipped), gunzipped if its name ends in ``.gz``.

    Raises ``FileNotFoundError`` for a missing file (``IsADirectoryError`` for a folder), and
    ``ValueError`` naming the file for an empty one (nothing but whitespace), for bytes that are
    not UTF-8 (with line and byte) and for NUL bytes (a binary file).
    """
    check_file(path)
    # Corpora ship gzipped (Multi30k's *.gz): read them as they are rather than ask users to unpack.
    with (gzip.open if os.fspath(path).endswith(".gz") else open)(path, "rb") as f:
        try:
            data = f.read()
        except (OSError, EOFError) as e:  # a truncated or non-gzip .gz file
            raise ValueError(f"{os.fspath(path)!r} is not a readable gzip file: {e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise ValueError(f"{os.fspath(path)!r} is not UTF-8 text: line {line}, byte {column} is "
                         f"{data[start:start + 1]!r} ({e.reason})") from None
    if not text.strip():
        raise ValueError(f"{os.fspath(path)!r} is empty")
    if "\x00" in text:  # valid UTF-8, but no text file holds NUL characters: a binary file
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(f"{os.fspath(path)!r} holds NUL bytes (line {line}): a binary file, not text")
    return text


def read_lines(path: PathLike) -> list[str]:
    """The lines of a UTF-8 text file (:func:`read_text`), each with its whitespace collapsed to
    single spaces; line ``i`` of the list is line ``i + 1`` of the file.

    Lines end at ``\n`` (or ``\r\n``) only, never at the other characters that
    ``str.splitlines`` breaks on (``\u2028``, form feeds...): parallel files stay aligned.
    """
    lines = read_text(path).split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [" ".join(line.split()) for line in lines]


def read_parallel(src_file: PathLike, tgt_file: PathLike) -> list[Pair]:
    """Pairs from two UTF-8 files of one sentence a line, line ``i`` translating line ``i``.

    Whitespace within a line is collapsed to single spaces. Pairs where either side is empty
    are skipped, with a warning (they teach nothing, and blank lines are how such files usually
    go wrong at the end); the line counts must match all the same, else ``ValueError`` naming
    both files. Bad files raise as :func:`read_lines` says.
    """
    src, tgt = read_lines(src_file), read_lines(tgt_file)
    if len(src) != len(tgt):
        raise ValueError(f"parallel files must have the same number of lines, got {len(src)} in "
                         f"{os.fspath(src_file)!r} and {len(tgt)} in {os.fspath(tgt_file)!r}")
    empty = [i + 1 for i, (s, t) in enumerate(zip(src, tgt)) if not (s and t)]
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        logger.warning("%s / %s: skipped %d line pair(s) with an empty side (line %s)", os.fspath(src_file),
                       os.fspath(tgt_file), len(empty), shown)
    return [(s, t) for s, t in zip(src, tgt) if s and t]


def split_pairs(pairs: Sequence[Pair], valid_fraction: float = 0.1,
                seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Random ``(train, valid)`` split with ``round(valid_fraction * len(pairs))`` valid pairs."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = round(valid_fraction * len(pairs))
    if valid_fraction > 0 and len(pairs) > 1:  # a share that rounds to none still validates on one pair
        n_valid = min(len(pairs) - 1, max(1, n_valid))
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

    @property
    def inputs(self) -> tuple:
        """The arguments of ``Seq2Seq.forward_flat``."""
        return self.src, self.ptr_src, self.tgt_in, self.ptr_tgt

    @property
    def labels(self) -> Tensor:
        return self.tgt_out

    def to(self, device) -> "FlatBatch":
        return FlatBatch(*(t.to(device) for t in self))


def flat_collate(items: Sequence[tuple[Tensor, Tensor]], bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> FlatBatch:
    """``(src_ids [S_b], tgt_ids [T_b])`` items of :class:`ParallelDataset` -> :class:`FlatBatch`."""
    bos, eos = torch.tensor([bos_id]), torch.tensor([eos_id])
    src, ptr_src = pack_sequences([s for s, _ in items])
    tgt_in, ptr_tgt = pack_sequences([torch.cat([bos, t]) for _, t in items])
    tgt_out, _ = pack_sequences([torch.cat([t, eos]) for _, t in items])
    return FlatBatch(src, ptr_src, tgt_in, tgt_out, ptr_tgt)
