"""graphattn: self-attention as message passing, with the attention pattern as a graph.

The package is laid out by role; imports run one way, bottom up:

* :mod:`graphattn.utils`: checks, batch layouts (``ptr``/``batch``), sorted edges, probes, tables;
* :mod:`graphattn.loader`: length-bucketed batching;
* :mod:`graphattn.patterns`: attention patterns as graphs, and their one grammar;
* :mod:`graphattn.ops`: the attention kernels (dense, edges, window, flex);
* :mod:`graphattn.transforms`: graph structure computed once (PyG transforms);
* :mod:`graphattn.nn`: GraphMultiheadAttention and the models built from it;
* :mod:`graphattn.distributed`: data-parallel training under ``torchrun``;
* :mod:`graphattn.text`, :mod:`graphattn.graphs`, :mod:`graphattn.compare`: the applications;
* :mod:`graphattn.cli`: the ``graphattn`` command.
"""
from graphattn import patterns
from graphattn.nn import GraphMultiheadAttention, GraphTransformer, Transformer
from graphattn.patterns import Pattern
from graphattn.text.model import Seq2Seq
from graphattn.version import __version__

__all__ = ["patterns", "Pattern", "GraphMultiheadAttention", "Transformer", "Seq2Seq", "GraphTransformer",
           "__version__"]
