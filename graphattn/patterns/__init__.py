r"""Attention patterns: which keys each query may attend, as the edges of a graph.

A batch of examples is laid out by ``ptr`` (LongTensor ``[B + 1]``, PyG's CSR offsets):
example ``b`` owns the nodes ``ptr[b]:ptr[b + 1]``. A pattern turns ``ptr`` into
``edge_index: [2, E]`` in PyG's convention, row 0 = key / source ``j``, row 1 = query / target
``i``, sorted by target then source, without duplicates and never crossing examples.

Positions are local to their example: ``window(w)`` lets local query ``t`` attend local keys
``s`` with ``|t - s| <= w``. Every position-based pattern also serves cross-attention: with a
second layout ``key_ptr`` the keys come from another batch of the same number of examples.
Graph patterns (``graph``, ``khop``) follow the batch's own graph.

Patterns combine: ``causal() & window(8)`` is a causal band, ``window(3) | global_tokens([0])``
a Longformer pattern. They compare by value and print as the one grammar :func:`parse` reads.
Edges are built vectorised in torch, in time and memory proportional to the number of edges,
never to ``n ** 2`` unless the pattern is that dense.

Example::

    >>> import torch
    >>> from graphattn import patterns
    >>> ptr = torch.tensor([0, 3, 5])          # two examples of lengths 3 and 2
    >>> patterns.window(1).edge_index(ptr)
    tensor([[0, 1, 0, 1, 2, 1, 2, 3, 4, 3, 4],
            [0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]])
    >>> patterns.causal() & patterns.window(8)
    causal&window:8

Modules: :mod:`~graphattn.patterns.base` (Pattern, union, intersection, how to write one),
:mod:`~graphattn.patterns.bands` (dense, causal, window, block), :mod:`~graphattn.patterns.sparse`
(dilated, global tokens, random, BigBird), :mod:`~graphattn.patterns.graph` (graph, khop),
:mod:`~graphattn.patterns.hops` (breadth-first expansion in O(pairs)), :mod:`~graphattn.patterns.expander`
(random regular expanders, Exphormer), :mod:`~graphattn.patterns.virtual` (virtual nodes: ``graph|expander|virtual``
is BigBird on graphs), :mod:`~graphattn.patterns.cross`, :mod:`~graphattn.patterns.reach` (statistics),
:mod:`~graphattn.patterns.tiles` (the tiles of a mask that block-sparse kernels visit),
:mod:`~graphattn.patterns.parse` (the grammar).
"""
from graphattn.patterns.bands import Band, RangePattern, block, causal, dense, window
from graphattn.patterns.base import Intersection, MaskRule, Pattern, Union, check_pattern
from graphattn.patterns.cross import Cross, cross
from graphattn.patterns.expander import Expander, expander
from graphattn.patterns.graph import GraphPattern, graph, khop
from graphattn.patterns.hops import hop_counts, hop_expansion
from graphattn.patterns.parse import NAMES, as_pattern, parse
from graphattn.patterns.reach import bfs_reach
from graphattn.patterns.sparse import bigbird, dilated, global_tokens, random
from graphattn.patterns.tiles import BlockSparsity
from graphattn.patterns.virtual import (VirtualNodes, add_virtual_nodes, insert_virtual_keys, split_virtual,
                                       virtual_nodes, virtual_pairs)
from graphattn.utils.checks import check_ptr

__all__ = [
    "Pattern", "RangePattern", "Band", "Union", "Intersection", "Cross", "GraphPattern", "Expander", "VirtualNodes",
    "MaskRule", "BlockSparsity",
    "dense", "causal", "window", "dilated", "block", "global_tokens", "random", "bigbird", "graph", "khop", "cross",
    "expander", "virtual_nodes", "split_virtual", "virtual_pairs", "insert_virtual_keys", "add_virtual_nodes",
    "hop_expansion", "hop_counts",
    "parse", "as_pattern", "NAMES", "check_pattern", "check_ptr", "bfs_reach",
]
