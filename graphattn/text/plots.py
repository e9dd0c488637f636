r"""Plots of a training run: the curves of its CSV log and the cross-attention of one sentence.

Drawn with ``matplotlib.figure.Figure`` rather than ``pyplot``, so a library call never touches
matplotlib's global backend state.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from graphattn.text.decoding import greedy_decode
from graphattn.text.model import Seq2Seq
from graphattn.text.tokenizer import BOS_ID, Tokenizer

__all__ = ["cross_attention", "attention_example", "plot_curves", "plot_attention"]


@torch.no_grad()
def cross_attention(model: Seq2Seq, src: Tensor, tgt_in: Tensor) -> Tensor:
    """Head-averaged cross-attention ``[T, S]`` of the last decoder layer for one sentence pair.

    A forward pre-hook records the layer's inputs during an ordinary forward pass, and the layer
    is called once more on them asking for the weights: the same code path for graph layers
    (``return_attention_weights``) and for ``nn.MultiheadAttention`` (``need_weights``).
    ``src: [S]`` source ids, ``tgt_in: [T]`` decoder input (BOS first); put the model in eval mode.
    """
    attn = model.transformer.decoder.layers[-1].multihead_attn
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, args, kwargs: seen.update(args=args, kwargs=dict(kwargs)),
                                            with_kwargs=True)
    try:
        model.forward_flat(src, torch.tensor([0, src.numel()]), tgt_in, torch.tensor([0, tgt_in.numel()]))
    finally:
        handle.remove()
    if isinstance(attn, nn.MultiheadAttention):
        _, weights = attn(*seen["args"], **{**seen["kwargs"], "need_weights": True, "average_attn_weights": True})
        return weights[0]  # (T, S)
    _, (edge_index, alpha) = attn(*seen["args"], **{**seen["kwargs"], "return_attention_weights": True})
    dense = alpha.new_zeros(tgt_in.numel(), src.numel())
    dense[edge_index[1], edge_index[0]] = alpha.mean(1)  # one example: local ids are global ids
    return dense


def plot_curves(log_path, png_path) -> Path:
    """Training loss, learning rate and validation BLEU / exact match (or perplexity) from the CSV log."""
    from matplotlib.figure import Figure  # imported here: only plotting needs matplotlib

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    step = [int(r["step"]) for r in rows]
    evals = [r for r in rows if r.get("valid_bleu")]
    ppl = [r for r in rows if r.get("valid_ppl")]
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    ax_loss, ax_lr, ax_valid = fig.subplots(1, 3)
    ax_loss.plot(step, [float(r["loss"]) for r in rows], lw=0.8)
    ax_loss.set(xlabel="step", ylabel="loss (label-smoothed)", title="training loss")
    ax_lr.plot(step, [float(r["lr"]) for r in rows])
    ax_lr.set(xlabel="step", ylabel="learning rate", title="Noam schedule")
    if ppl:  # a language model
        ax_valid.plot([int(r["step"]) for r in ppl], [float(r["valid_ppl"]) for r in ppl], marker="o")
        ax_valid.set(xlabel="step", ylabel="perplexity", yscale="log", title="validation perplexity")
    else:
        for key, label in (("valid_bleu", "BLEU"), ("valid_em", "exact match %")):
            ax_valid.plot([int(r["step"]) for r in evals], [float(r[key]) for r in evals], marker="o", label=label)
        ax_valid.set(xlabel="step", ylim=(0, 100), title="validation (greedy)")
        ax_valid.legend()
    fig.savefig(png_path, dpi=110)
    return Path(png_path)


def plot_attention(weights: Tensor, src_tokens: Sequence[str], tgt_tokens: Sequence[str], png_path,
                   title: str = "") -> Path:
    """Heat map of ``weights [T, S]``: rows = generated tokens, columns = source tokens."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1 + 0.45 * len(src_tokens), 1 + 0.4 * len(tgt_tokens)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0)
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), tgt_tokens)
    ax.set(xlabel="source", ylabel="generated", title=title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(png_path, dpi=110)
    return Path(png_path)


@torch.no_grad()
def attention_example(model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, sentence: str,
                      max_len: int = 64) -> tuple[Tensor, list, list]:
    """``(weights [T, S], source tokens, generated tokens)`` of the greedy translation of ``sentence``."""
    src = torch.tensor(src_tokenizer.encode(sentence, add_eos=False)[:max_len - 1] + [src_tokenizer.eos_id])
    out = greedy_decode(model, src, torch.tensor([0, src.numel()]), max_len).tokens[0]
    weights = cross_attention(model, src, torch.tensor([BOS_ID] + out[:-1]))
    return weights, src_tokenizer.tokens(src, readable=True), tgt_tokenizer.tokens(out, readable=True)
