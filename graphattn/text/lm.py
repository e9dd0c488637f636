r"""Language-model data: text files as token streams cut into training sequences, and perplexity.

Each file is one document. Its tokens, followed by ``<eos>``, are concatenated into one stream
that is cut into sequences of ``context + 1`` tokens overlapping by one, so that every token but
the first is predicted exactly once: item ``i`` is ``(inputs [L], targets [L])`` with
``targets[t] = inputs[t + 1]`` in the stream. A batch is a flat path-graph batch
(:class:`LMBatch`: ``tokens [N]``, ``targets [N]``, ``ptr [B + 1]``), no padding.

:func:`perplexity` is :math:`\exp` of the mean negative log-likelihood per predicted token.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from graphattn import distributed
from graphattn.text.data import read_text
from graphattn.text.tokenizer import Tokenizer
from graphattn.utils.batch import pack_sequences
from graphattn.utils.checks import check_int

__all__ = ["read_documents", "split_documents", "LMDataset", "LMBatch", "lm_collate", "perplexity", "generate_text"]

PathLike = Union[str, os.PathLike]


def read_documents(paths: Sequence[PathLike]) -> list[str]:
    """The text of each file (UTF-8; errors as :func:`~graphattn.text.data.read_text`: a missing
    or empty file or bytes that are not UTF-8 raise, naming the file)."""
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ValueError(f"paths must be a non-empty list of text files, got {paths!r}")
    return [read_text(p) for p in paths]


def split_documents(documents: Sequence[str], valid_fraction: float = 0.05,
                    seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, valid)`` documents: ``round(valid_fraction * D)`` whole documents (at least one)
    drawn at random for validation, so no validation text sits next to training text. A single
    document is split by lines instead: its last ``valid_fraction`` goes to validation."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    documents = list(documents)
    if len(documents) == 1:
        lines = documents[0].splitlines(keepends=True)
        if len(lines) < 2:
            raise ValueError("one document of one line cannot be split into training and validation text")
        cut = min(len(lines) - 1, max(1, round(len(lines) * (1 - valid_fraction))))
        return ["".join(lines[:cut])], ["".join(lines[cut:])]
    perm = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = min(len(documents) - 1, max(1, round(valid_fraction * len(documents))))
    return [documents[i] for i in sorted(perm[n_valid:])], [documents[i] for i in sorted(perm[:n_valid])]


class LMDataset(Dataset):
    r"""Documents as training sequences of ``context`` tokens (the last may be shorter).

    Args:
        documents (list of str): the texts; each ends with ``<eos>`` in the stream.
        tokenizer (Tokenizer): their tokenizer.
        context (int): tokens a sequence holds (and predicts).

    Item ``i`` is ``(inputs [L], targets [L])``, LongTensors with ``L <= context``;
    :attr:`num_tokens` counts the tokens predicted over the whole set.
    """

    def __init__(self, documents: Sequence[str], tokenizer: Tokenizer, context: int):
        self.context = check_int("context", context, 1)
        self.tokenizer = tokenizer
        ids = [i for seq in tokenizer.encode_batch(list(documents), add_eos=True) for i in seq]
        stream = torch.tensor(ids, dtype=torch.long)
        # Windows of context + 1 tokens every `context` tokens: each token is a target once.
        starts = range(0, max(stream.numel() - 1, 0), self.context)
        self.chunks = [stream[s:s + self.context + 1] for s in starts]
        self.num_tokens = max(stream.numel() - 1, 0)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        chunk = self.chunks[i]
        return chunk[:-1], chunk[1:]

    @property
    def lengths(self) -> list[int]:
        """Tokens of each sequence, for :class:`~graphattn.loader.LengthBucketSampler`."""
        return [c.numel() - 1 for c in self.chunks]


class LMBatch(NamedTuple):
    """Sequences as one flat path-graph batch: no padding anywhere."""

    tokens: Tensor  # [N] input ids
    targets: Tensor  # [N] the next token of each input
    ptr: Tensor  # [B + 1]

    @property
    def num_tokens(self) -> int:
        return self.tokens.numel()

    @property
    def inputs(self) -> tuple:
        """The arguments of ``CausalLM.forward_flat``."""
        return self.tokens, self.ptr

    @property
    def labels(self) -> Tensor:
        return self.targets

    def to(self, device) -> "LMBatch":
        return LMBatch(*(t.to(device) for t in self))


def lm_collate(items: Sequence[tuple[Tensor, Tensor]]) -> LMBatch:
    """``(inputs [L_b], targets [L_b])`` items of :class:`LMDataset` -> :class:`LMBatch`."""
    tokens, ptr = pack_sequences([x for x, _ in items])
    targets, _ = pack_sequences([y for _, y in items])
    return LMBatch(tokens, targets, ptr)


@torch.no_grad()
def perplexity(model: nn.Module, dataset: LMDataset, batch_size: int = 16,
               ctx: Optional[distributed.Context] = None) -> dict:
    r"""``{"perplexity", "nll", "tokens"}`` of ``model`` (a :class:`~graphattn.nn.CausalLM`) on
    ``dataset``: :math:`\exp(-\frac{1}{N} \sum_t \log p(x_{t+1} \mid x_{\le t}))` over its ``N``
    predicted tokens (``nll`` is the mean in nats). Under ``torchrun`` each rank scores
    ``dataset[rank::W]`` and every rank gets the scores of the whole set."""
    ctx = ctx or distributed.Context()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    for i in range(0, len(mine), batch_size):
        batch = lm_collate([dataset[j] for j in mine[i:i + batch_size]]).to(device)
        logits = model.forward_flat(*batch.inputs)
        total += float(F.cross_entropy(logits.float(), batch.targets, reduction="sum"))
        count += batch.targets.numel()
    model.train(was_training)
    total, count = distributed.all_sum([total, count], ctx)
    nll = total / count if count else math.nan
    return {"perplexity": math.exp(min(nll, 700.0)), "nll": nll, "tokens": int(count)}


@torch.no_grad()
def generate_text(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: Optional[int] = None, top_p: Optional[float] = None,
                  seed: Optional[int] = None) -> list[str]:
    """Each prompt followed by what ``model`` (a :class:`~graphattn.nn.CausalLM` in eval mode)
    writes after it, as text.

    A prompt starts after ``<eos>``, as every document does in training (an empty prompt is the
    start of a document), and generation stops at the end of the document (``<eos>``) or after
    ``max_new_tokens`` tokens. Sampling as :meth:`~graphattn.nn.CausalLM.generate`.
    """
    ids = [[tokenizer.eos_id] + seq for seq in tokenizer.encode_batch(list(prompts), add_eos=False)]
    out = model.generate([torch.tensor(seq) for seq in ids], max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, eos_id=tokenizer.eos_id)
    return [tokenizer.decode(seq[1:]) for seq in out]
