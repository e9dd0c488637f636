r"""Sequence models on text: translation (encoder-decoder) and language models (decoder-only),
their data, tokenizers, training, decoding and generation.

* ``model.py``: :class:`Seq2Seq` (embeddings, positional encoding, the graph Transformer, a
  generator) and its ``torch.nn.Transformer`` twin for comparisons; the language model is
  :class:`graphattn.nn.CausalLM`.
* ``decoding.py``: greedy and beam search with cached keys and values.
* ``tokenizer.py``: :class:`Tokenizer`, byte-level BPE / Unigram, characters or words, trained
  with Hugging Face ``tokenizers`` and stored in checkpoints as JSON.
* ``numbers.py``, ``data.py``, ``lm.py``, ``metrics.py``: the numbers task, parallel text and
  flat batches, text files as language-model sequences and perplexity, BLEU and exact match.
* ``config.py``: :class:`TrainConfig`, a run's settings by role (data, model, optimisation, run).
* ``build.py``: what a configuration builds (data, tokenizers, model), and the model a checkpoint holds.
* ``train.py``, ``diagnostics.py``, ``evaluation.py``, ``checkpoint.py``, ``plots.py``, ``runs.py``: a
  training run from its configuration to warnings, checkpoints, logs and plots.
"""
from graphattn.text.config import TrainConfig
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.text.tokenizer import Tokenizer

# The training loop is graphattn.text.train.train: not re-exported here, where the function
# would hide its own module.
__all__ = ["Seq2Seq", "TorchSeq2Seq", "greedy_decode", "beam_search", "TrainConfig", "Tokenizer"]
