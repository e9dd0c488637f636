r"""Layers: :class:`GraphMultiheadAttention` and what is built from it.

* ``attention.py``: :class:`GraphMultiheadAttention`, one multi-head attention layer for every pattern.
* ``transformer_layers.py``, ``transformer.py``: the Transformer of "Attention Is All You Need",
  equal to ``torch.nn.Transformer`` with the same weights.
* ``graph_transformer.py``: :class:`GraphTransformer` for node and graph tasks, in stages
  (``embed -> blocks -> readout``); ``graph_inputs.py``: what the stages pass along;
  ``task_defaults.py``: what its ``"auto"`` arguments mean for node and graph tasks.
* ``kv_cache.py``: :class:`KVCache`, the keys and values of incremental decoding (full, or a ring of
  ``w + 1`` positions under ``causal&window:w``; cross-attention's memory projected once), which the
  layers' ``step`` fills; ``generation.py``: greedy, sampled and beam-search loops over any model's step.
* ``span.py``: :class:`LearnedSpan`, a per-head learned attention span.
* ``positional.py``: sinusoidal encodings and relative-position biases on path graphs.
* ``mlp.py``: the small perceptron the graph blocks share.
"""
from graphattn.nn.attention import BACKENDS, GraphMultiheadAttention
from graphattn.nn.causal_lm import CausalLM
from graphattn.nn.kv_cache import KVCache
from graphattn.nn.graph_transformer import GraphState, GraphTransformer, GraphTransformerLayer
from graphattn.nn.positional import RelativePositionBias, positional_encoding, relative_position_buckets, relative_positions
from graphattn.nn.span import LearnedSpan
from graphattn.nn.task_defaults import TASK_DEFAULTS, task_defaults
from graphattn.nn.transformer import Transformer, TransformerDecoder, TransformerEncoder
from graphattn.nn.transformer_layers import TransformerDecoderLayer, TransformerEncoderLayer

__all__ = [
    "GraphMultiheadAttention", "BACKENDS", "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
    "TransformerDecoder", "Transformer", "KVCache", "GraphTransformer", "GraphTransformerLayer", "GraphState",
    "LearnedSpan", "TASK_DEFAULTS", "task_defaults",
    "positional_encoding", "relative_positions", "relative_position_buckets", "RelativePositionBias", "CausalLM",
]
