r"""What a :class:`~graphattn.text.config.TrainConfig` builds (its data, tokenizers and model), and
the model a checkpoint holds, rebuilt from the configuration and tokenizers stored in it.

A checkpoint stores the configuration as a flat dict (:meth:`TrainConfig.to_flat`) and the
tokenizers as JSON strings (:mod:`graphattn.text.checkpoint`); :func:`load_model` rebuilds the
model from them and loads its weights.
"""
from __future__ import annotations

from typing import Optional

from graphattn import patterns as P
from graphattn.nn import CausalLM
from graphattn.text.checkpoint import load_checkpoint
from graphattn.text.config import TrainConfig, config_from_dict, tokenizer_kind
from graphattn.text.data import read_parallel, split_pairs
from graphattn.text.lm import read_documents, split_documents
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.text.numbers import normalize, number_pairs, number_splits, numbers_task
from graphattn.text.tokenizer import Tokenizer

__all__ = ["load_task", "task_test_pairs", "source_text", "build_tokenizers", "build_model", "checkpoint_tokenizers",
           "state_dict_mismatch", "load_model"]


def load_task(config: TrainConfig) -> dict:
    """The data of ``config``: translation ``{"train", "valid"}`` (and ``"test"``, ``"test_round"``
    for the numbers task) lists of ``(src, tgt)`` pairs; for a language model ``{"train", "valid"}``
    lists of documents. Bad files raise here, before a run writes anything."""
    data, seed = config.data, config.run.seed
    if config.kind == "lm":
        documents = read_documents(data.text)
        if data.valid_text:
            return {"train": documents, "valid": read_documents(data.valid_text)}
        train, valid = split_documents(documents, data.valid_fraction, seed)
        return {"train": train, "valid": valid}
    if data.numbers_task:
        return numbers_task(seed, train_size=data.train_size, valid_size=data.valid_size, test_size=data.test_size)
    pairs = read_parallel(data.src, data.tgt)
    if data.valid_src is not None:
        return {"train": pairs, "valid": read_parallel(data.valid_src, data.valid_tgt)}
    train_pairs, valid_pairs = split_pairs(pairs, data.valid_fraction, seed)
    return {"train": train_pairs, "valid": valid_pairs}


def task_test_pairs(config: TrainConfig, split: str = "test") -> list:
    """The numbers task's ``"test"`` (uniform) or ``"test_round"`` split of ``config``, generated
    without the training pairs."""
    data = config.data
    if not data.numbers_task:
        raise ValueError("the model was not trained on the numbers task: give the test files (src and tgt)")
    return number_pairs(number_splits(config.run.seed, train_size=data.train_size, valid_size=data.valid_size,
                                      test_size=data.test_size)[split])


def source_text(config: TrainConfig, text: str) -> str:
    """A user's sentence as the training data was written (the numbers task is lowercase)."""
    return normalize(text) if config.data.numbers_task else " ".join(text.split())


def build_tokenizers(config: TrainConfig, data: dict) -> tuple[Optional[Tokenizer], Tokenizer]:
    """``(src_tokenizer, tgt_tokenizer)`` trained on the training data of :func:`load_task`
    (one shared tokenizer with ``shared_vocab``); for a language model ``(None, tokenizer)``."""
    kind, vocab_size = tokenizer_kind(config), config.data.vocab_size
    extra = {"min_frequency": config.data.min_frequency} if kind == "bpe" else {}
    if config.kind == "lm":
        return None, Tokenizer.train(data["train"], kind, vocab_size, **extra)
    src = [s for s, _ in data["train"]]
    tgt = [t for _, t in data["train"]]
    if config.data.shared_vocab:
        shared = Tokenizer.train(src + tgt, kind, vocab_size, **extra)
        return shared, shared
    return Tokenizer.train(src, kind, vocab_size, **extra), Tokenizer.train(tgt, kind, vocab_size, **extra)


def build_model(config: TrainConfig, src_vocab: Optional[int], tgt_vocab: int):
    """The model of ``config``: :class:`Seq2Seq` (or :class:`TorchSeq2Seq` with ``reference_torch``)
    over vocabularies of ``src_vocab`` and ``tgt_vocab`` ids, or for a language model a
    :class:`~graphattn.nn.CausalLM` over ``tgt_vocab`` ids."""
    m = config.model
    if config.kind == "lm":
        return CausalLM(tgt_vocab, m.d_model, m.num_heads, m.layers, m.ff, m.dropout, pattern=m.decoder_pattern,
                        positional=m.positional)
    cls = TorchSeq2Seq if m.reference_torch else Seq2Seq
    return cls(src_vocab, tgt_vocab, m.d_model, m.num_heads, m.layers, m.layers, m.ff, m.dropout,
               encoder_pattern=P.parse(m.encoder_pattern), decoder_pattern=P.parse(m.decoder_pattern))


def checkpoint_tokenizers(ckpt: dict, config: TrainConfig) -> tuple[Optional[Tokenizer], Tokenizer]:
    """``(src_tokenizer, tgt_tokenizer)`` stored in a checkpoint (version 1's word lists too)."""
    vocab = ckpt["vocab"]
    if config.kind == "lm":
        return None, Tokenizer.from_dict(vocab["text"])
    return Tokenizer.from_dict(vocab["src"]), Tokenizer.from_dict(vocab["tgt"])


def state_dict_mismatch(model, state: dict, shown: int = 3) -> Optional[str]:
    """What keeps ``state`` from loading into ``model``, in one line (missing keys, unexpected
    keys, shapes that differ; ``shown`` of each, then a count), or None if it fits. torch's own
    message lists every key over many lines."""
    if not isinstance(state, dict):
        return f"the weights are a {type(state).__name__}, not a state_dict"
    own = model.state_dict()

    def listed(what: str, items: list) -> str:
        more = f" and {len(items) - shown} more" if len(items) > shown else ""
        return f"{len(items)} {what} ({', '.join(items[:shown])}{more})"

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    sizes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    parts = [listed(what, items) for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                                      ("size mismatches (checkpoint vs model)", sizes)) if items]
    return "; ".join(parts) or None


def load_model(path) -> tuple:
    """``(model in eval mode, src_tokenizer, tgt_tokenizer, config)`` of a checkpoint (for a
    language model ``src_tokenizer`` is None); ``ValueError`` naming the path and the problem if
    it is bad, or if its config is one this version cannot read."""
    ckpt = load_checkpoint(path)
    try:
        config = config_from_dict(ckpt["config"])
        src_tok, tgt_tok = checkpoint_tokenizers(ckpt, config)
        model = build_model(config, None if src_tok is None else len(src_tok), len(tgt_tok))
        mismatch = state_dict_mismatch(model, ckpt["model"])
        if mismatch:
            raise ValueError(f"its weights do not fit the model its config builds: {mismatch}")
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{str(path)!r} holds an inconsistent checkpoint: {str(e).splitlines()[0]}") from None
    return model.eval(), src_tok, tgt_tok, config
