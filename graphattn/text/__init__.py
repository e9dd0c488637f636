r"""Sequence models on text: the encoder-decoder translation model, its data, training and decoding.

* ``model.py``: :class:`Seq2Seq` (embeddings, positional encoding, the graph Transformer, a
  generator) and its ``torch.nn.Transformer`` twin for comparisons.
* ``decoding.py``: greedy and beam search with cached keys and values.
* ``numbers.py``, ``vocab.py``, ``data.py``, ``metrics.py``: the numbers task, tokens and
  vocabularies, datasets and flat batches, BLEU and exact match.
* ``config.py``, ``train.py``, ``evaluation.py``, ``checkpoint.py``, ``plots.py``: a training run
  from its configuration to checkpoints, logs and plots.
"""
from graphattn.text.config import TrainConfig
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.model import Seq2Seq, TorchSeq2Seq

# The training loop is graphattn.text.train.train: not re-exported here, where the function
# would hide its own module.
__all__ = ["Seq2Seq", "TorchSeq2Seq", "greedy_decode", "beam_search", "TrainConfig"]
