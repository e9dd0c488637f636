r"""Graph patterns: attention along a graph's edges (``graph``) or within ``k`` hops (``khop``).

A graph pattern reads the batch's own graph (``edge_index [2, E]`` in global numbering, never
crossing examples): either the one it was built with (``graph(edge_index)``) or, when built
without one (``graph()``, or ``parse("khop:2")``), the one each call passes
(``pattern.edge_index(ptr, graph=edge_index)``; the attention layer passes its ``edge_index``).
The second form lets one pattern name serve every batch of a data set.

``khop(k)`` comes from a breadth-first expansion (:func:`~graphattn.patterns.hops.hop_expansion`)
in time and memory proportional to its pairs, which also yields each pair's hop count.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from graphattn.patterns.base import Pattern
from graphattn.patterns.hops import hop_expansion
from graphattn.utils.batch import Layout
from graphattn.utils.checks import check_edge_index, check_int
from graphattn.utils.edges import coalesce_edges

__all__ = ["GraphPattern", "graph", "khop"]


class GraphPattern(Pattern):
    """Attention within ``k`` hops of a graph; see :func:`graph` and :func:`khop`."""

    position_based = False

    def __init__(self, edge_index: Optional[Tensor] = None, self_loops: bool = True, k: int = 1):
        self.graph_edge_index = None if edge_index is None else check_edge_index(edge_index)
        if not isinstance(self_loops, bool):
            raise TypeError(f"self_loops must be a bool, got {type(self_loops).__name__}")
        self.self_loops = self_loops
        self.k = check_int("k", k, 1)

    def graph_edges(self, query: Layout) -> Tensor:
        """The graph this pattern follows on the batch ``query``, checked against its layout."""
        edge_index = self.graph_edge_index if self.graph_edge_index is not None else query.graph
        if edge_index is None:
            raise ValueError(f"{self!r} reads the batch's graph: pass it (edge_index [2, E]) along with ptr")
        edge_index = edge_index.to(query.ptr.device)
        n = query.num_nodes
        if edge_index.numel() and int(edge_index.max()) >= n:
            raise ValueError(f"edge_index points outside the graph: node {int(edge_index.max())} but ptr[-1] is {n}")
        if edge_index.numel() and bool((query.batch[edge_index[0]] != query.batch[edge_index[1]]).any()):
            raise ValueError("edge_index has edges between different examples of ptr")
        return edge_index

    @property
    def expands(self) -> bool:
        return self.k > 1

    def build_edges(self, query, key):
        return self.hop_pairs(query)[0]

    def graph_radius(self):
        return self.k

    def hop_pairs(self, query, queries=None, max_pairs=None):
        edge_index = self.graph_edges(query)
        n = query.num_nodes
        if self.k > 1:
            return hop_expansion(edge_index, n, self.k, queries, max_pairs=max_pairs)
        if self.self_loops:
            loops = torch.arange(n, device=edge_index.device).expand(2, n)
            edge_index = torch.cat([edge_index, loops], 1)
        pairs = coalesce_edges(edge_index, n)
        if queries is not None:
            pairs = pairs[:, torch.isin(pairs[1], queries)]
        return pairs, (pairs[0] != pairs[1]).to(torch.uint8)

    def __repr__(self):
        name = "graph" + ("" if self.self_loops else ":0") if self.k == 1 else f"khop:{self.k}"
        if self.graph_edge_index is None:
            return name
        return f"{name}(<{self.graph_edge_index.size(1)} edges>)"


def graph(edge_index: Optional[Tensor] = None, self_loops: bool = True) -> Pattern:
    """Attention along the edges of a graph (``edge_index [2, E]``, global numbering).

    With ``self_loops=True`` every node also attends itself. Without ``edge_index`` the pattern
    follows the graph that each call passes (see the module docstring).
    """
    return GraphPattern(edge_index, self_loops)


def khop(k: int, edge_index: Optional[Tensor] = None) -> Pattern:
    """Query ``i`` attends every node ``j`` from which a path of at most ``k`` edges leads to ``i``.

    Self included (0 hops). On the path graph (both directions), ``khop(w, path) == window(w)``.
    Without ``edge_index`` the pattern follows the graph that each call passes.
    """
    return GraphPattern(edge_index, True, check_int("k", k, 1))
