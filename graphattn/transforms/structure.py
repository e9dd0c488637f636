r"""Graph structure that attention reads, computed once per graph: the pattern's pairs, which graph
edge each pair is, and how many hops apart its two ends are (Graphormer's spatial encoding).

:class:`GraphStructure` is the PyG transform that stores them on each ``Data``; models expose
theirs as ``model.transform``, applied once to a data set (``[model.transform(d) for d in data]``
or a dataset's ``pre_transform``), so that a training step runs no graph search. Its fields batch
with PyG's ``Batch.from_data_list``: ``pair_index`` ends in ``_index``, so PyG shifts it by each
graph's node count; ``pair_edge`` is counted from each graph's first edge, and models add the
graph's edge offset (:func:`pair_edge_ids_of_batch`).

Every search here is a breadth-first expansion in O(pairs) (:mod:`graphattn.patterns.hops`),
never a dense ``[N, N]`` distance matrix.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import degree

from graphattn import patterns as P
from graphattn.patterns.hops import hop_counts
from graphattn.patterns.virtual import split_virtual
from graphattn.utils.batch import Layout, graph_layout
from graphattn.utils.checks import check_edge_index, check_graph_data, check_int, eager_only
from graphattn.utils.edges import edge_keys

__all__ = ["GraphStructure", "InDegree", "PAIR_ATTRS", "pattern_pairs", "pair_edge_ids", "pair_edge_ids_of_batch",
           "pattern_edge_attr", "shortest_path_buckets", "edge_fingerprint", "check_fingerprint"]

#: the fields :class:`GraphStructure` adds to a ``Data``
PAIR_ATTRS = ("pair_index", "pair_bucket", "pair_edge", "pair_spec", "pair_fingerprint")

# Odd 63-bit constants of a multiply-xorshift mix (splitmix64's, halved to fit int64).
_MIX = (0x4F1BBCDCBFA53E0B, 0x3C6EF372FE94F82B, 0x2545F4914F6CDD1D)


def pair_edge_ids(edge_index: Tensor, pairs: Tensor, num_nodes: int) -> Tensor:
    r"""The graph edge ``j -> i`` of every pair (its column in ``edge_index``), ``-1`` for none.

    Args:
        edge_index (LongTensor): the graph's edges :math:`(2, E)`.
        pairs (LongTensor): pattern pairs :math:`(2, E_p)`.
        num_nodes (int): nodes of the graph (or batch).

    Returns:
        LongTensor :math:`(E_p)`; of parallel edges, the first is taken.
    """
    out = torch.full((pairs.size(1),), -1, dtype=torch.long, device=pairs.device)
    if edge_index.size(1) == 0 or pairs.size(1) == 0:
        return out
    keys, order = torch.sort(edge_keys(edge_index, num_nodes), stable=True)  # first of parallel edges
    wanted = edge_keys(pairs, num_nodes)
    pos = torch.searchsorted(keys, wanted).clamp_(max=keys.numel() - 1)
    found = keys[pos] == wanted
    out[found] = order[pos[found]]
    return out


def pattern_edge_attr(edge_index: Tensor, edge_attr: Tensor, pairs: Tensor, num_nodes: int) -> Tensor:
    r"""Features of the graph edge ``j -> i`` for every pair of a pattern, zeros for non-edges.

    Args:
        edge_index (LongTensor): the graph's edges :math:`(2, E)`.
        edge_attr (Tensor): their features :math:`(E, F)`.
        pairs (LongTensor): the pattern's (key, query) pairs :math:`(2, E_p)`.
        num_nodes (int): nodes of the batch.

    Returns:
        Tensor :math:`(E_p, F)`. Of parallel edges, one's features are taken.
    """
    return gather_edge_attr(edge_attr, pair_edge_ids(edge_index, pairs, num_nodes))


def gather_edge_attr(edge_attr: Tensor, edge_ids: Tensor) -> Tensor:
    """``edge_attr[edge_ids]`` with zero rows where ``edge_ids`` is ``-1``: ``(E_p, F)``."""
    if edge_attr.size(0) == 0:
        return edge_attr.new_zeros(edge_ids.numel(), edge_attr.size(1))
    # a select, not a boolean-index write: no data-dependent shape, so torch.compile keeps one graph
    found = (edge_ids >= 0).unsqueeze(1)
    return torch.where(found, edge_attr[edge_ids.clamp(min=0)], edge_attr.new_zeros(()))


def shortest_path_buckets(edge_index: Tensor, pairs: Tensor, ptr: Tensor, max_distance: int) -> Tensor:
    r"""Graphormer's spatial bucket of each pattern pair: hops from key ``j`` to query ``i``.

    Bucket ``0`` is the node itself, ``1 .. max_distance`` the number of hops along
    ``edge_index`` (directed as given), ``max_distance + 1`` "farther, or unreachable". A
    breadth-first expansion from the pairs' queries (:func:`~graphattn.patterns.hops.hop_counts`)
    that stops at ``max_distance`` hops: its cost is that of the pairs within ``max_distance``
    hops of those queries, never a dense distance matrix.

    Args:
        edge_index (LongTensor): graph edges :math:`(2, E)`, row 0 source, row 1 target.
        pairs (LongTensor): pattern pairs :math:`(2, E_p)` sorted by query (as patterns give them).
        ptr (LongTensor): :math:`(B + 1)` offsets of the graphs; no edge crosses two graphs.
        max_distance (int): the largest distance with a bucket of its own (:math:`\ge 1`).

    Returns:
        LongTensor :math:`(E_p)` with values in ``[0, max_distance + 1]``.
    """
    max_distance = check_int("max_distance", max_distance, 1)
    return hop_counts(edge_index, pairs, int(ptr[-1]), max_distance)


def pattern_pairs(pattern, ptr: Tensor, edge_index: Tensor, max_distance: int,
                  max_pairs: Optional[int] = None) -> tuple[Tensor, Tensor]:
    r"""The real pairs of a pattern on a graph batch and their hop buckets (uint8).

    Virtual nodes (:func:`~graphattn.patterns.virtual.split_virtual`) are left out: models add
    them around their layers. ``khop(k)`` and ``graph`` give their buckets from their own
    expansion. Other patterns search from their queries, as deep as ``max_distance`` hops, and
    no deeper than the widest graph part of a union (``graph|expander:4:0`` searches 1 hop,
    ``khop:2|...`` 2 hops): the pairs beyond are "farther" (``max_distance + 1``), and the search
    costs no more than the graph part's own pairs, where a deep search from every node of a
    large graph would reach all of it.

    Returns:
        ``(pairs (2, E_p), buckets (E_p,))``, buckets in ``[0, max_distance + 1]``.
    """
    max_distance = check_int("max_distance", max_distance, 1)
    rest, _ = split_virtual(P.as_pattern(pattern))
    num_nodes = int(ptr[-1])
    if rest is None:
        empty = torch.empty(2, 0, dtype=torch.long, device=ptr.device)
        return empty, torch.empty(0, dtype=torch.uint8, device=ptr.device)
    query, _ = rest.layouts(ptr, graph=None if rest.position_based else edge_index)
    own = rest.hop_pairs(query, max_pairs=max_pairs)  # graph, khop: pairs and hops from one expansion
    if own is not None:
        pairs, hops = own
        return pairs, hops.clamp_(max=max_distance + 1)
    pairs = rest.build_edges(query, query)
    radius = rest.graph_radius()
    depth = max_distance if radius is None else min(max_distance, radius)
    buckets = hop_counts(edge_index, pairs, num_nodes, depth)
    return pairs, torch.where(buckets > depth, max_distance + 1, buckets).to(torch.uint8)


def _edge_ptr(batch: Tensor, num_graphs: int, edge_index: Tensor) -> Tensor:
    """First edge of every example ``[B]``; edges are grouped by example, as in a PyG ``Batch``."""
    # PyG's degree (a scatter into num_graphs slots) rather than bincount, whose output size
    # depends on the data: torch.compile keeps one graph
    counts = degree(batch[edge_index[1]], num_graphs, dtype=torch.long)
    return counts.cumsum(0) - counts


def pair_edge_ids_of_batch(pair_edge: Tensor, pairs: Tensor, edge_index: Tensor, ptr: Tensor,
                           batch: Optional[Tensor] = None) -> Tensor:
    """Columns in ``edge_index`` of the pairs' graph edges (``-1``: none), from the per-graph
    ``pair_edge`` of :class:`GraphStructure` and the batch's edge offsets (``batch``: the example
    of each node, derived from ``ptr`` when not given); checked, in eager mode, to join the same
    two nodes, so a graph whose edges changed after the transform is caught."""
    if batch is None:
        batch = Layout.of(ptr).batch
    edge_ptr = _edge_ptr(batch, ptr.numel() - 1, edge_index)
    ids = torch.where(pair_edge >= 0, pair_edge + edge_ptr[batch[pairs[1]]], -1)
    found = ids >= 0
    if eager_only() and found.any() and (int(ids.max()) >= edge_index.size(1) or
                                         not torch.equal(edge_index[:, ids[found]], pairs[:, found])):
        raise ValueError("data.pair_edge does not match data.edge_index: the graph changed after "
                         "model.transform; apply it again")
    return ids


def edge_fingerprint(edge_index: Tensor, ptr: Tensor, batch: Optional[Tensor] = None,
                     ordered: bool = True) -> Tensor:
    r"""A cheap fingerprint of each graph's edges: ``[B, 3]`` int64 rows of (nodes, edges, hash).

    The hash sums a 64-bit mix of every edge's two ends, counted from its graph's first node
    (and, with ``ordered``, of its position among the graph's edges), so a graph has the same
    fingerprint alone and in any batch, and PyG's batching stacks the rows of its graphs. It
    costs a few passes over the edges, no sort; a changed, added, removed or (``ordered``) moved
    edge changes it except with probability about :math:`2^{-64}`.

    Args:
        edge_index (LongTensor): :math:`(2, E)`, grouped by graph as in a PyG ``Batch``.
        ptr (LongTensor): :math:`(B + 1)` node offsets of the graphs.
        batch (LongTensor, optional): :math:`(N)` graph of each node (default: from ``ptr``).
        ordered (bool, optional): whether the edges' order counts. (default: :obj:`True`)
    """
    layout = Layout.of(ptr)
    batch = layout.batch if batch is None else batch
    num_graphs = ptr.numel() - 1
    graph = batch[edge_index[1]]
    src, dst = edge_index - ptr[graph]  # ends counted from the graph's first node
    h = (src * _MIX[0] + dst) * _MIX[1]  # int64 arithmetic wraps around: a hash, not a number
    if ordered:
        h = h + torch.arange(edge_index.size(1), device=h.device) - _edge_ptr(batch, num_graphs, edge_index)[graph]
    h = (h ^ (h >> 31)) * _MIX[2]
    h = h ^ (h >> 29)
    out = torch.zeros(num_graphs, 3, dtype=torch.long, device=edge_index.device)
    out[:, 0] = ptr.diff()
    out[:, 1] = degree(graph, num_graphs, dtype=torch.long)
    return out.index_put_((graph, torch.full_like(graph, 2)), h, accumulate=True)


def check_fingerprint(fingerprint: Optional[Tensor], edge_index: Tensor, ptr: Tensor, batch: Optional[Tensor] = None,
                      ordered: bool = True) -> None:
    """Raise a ``ValueError`` unless ``fingerprint`` (``data.pair_fingerprint``) is that of
    ``edge_index`` now: pairs computed for other edges would be used without a word. Eager
    only (it reads values): traced code skips it."""
    if not eager_only():
        return
    if fingerprint is None:
        raise ValueError("the data has attention pairs but no data.pair_fingerprint (it was prepared by an older "
                         "graphattn): apply model.transform to it again")
    now = edge_fingerprint(edge_index, ptr, batch, ordered)
    fingerprint = fingerprint.reshape(-1, 3)
    if fingerprint.shape != now.shape:
        raise ValueError(f"data.pair_fingerprint describes {fingerprint.size(0)} graphs, the batch has "
                         f"{now.size(0)}: apply model.transform to each graph before batching")
    differs = (fingerprint != now).any(1)
    if bool(differs.any()):
        b = int(differs.nonzero()[0])
        (n0, e0, _), (n1, e1, _) = fingerprint[b].tolist(), now[b].tolist()
        raise ValueError(f"data.edge_index changed after model.transform computed the attention pairs (graph {b}: "
                         f"{n0} nodes and {e0} edges then, {n1} and {e1} now, or other edges): apply model.transform "
                         "to the changed data again")


class InDegree(BaseTransform):
    r"""Stores each node's in-degree on the whole graph as ``data.in_degree`` (long ``[N]``), the
    count that a degree embedding (``GraphTransformer(max_degree=...)``) reads.

    Apply it to the whole graph before sampling subgraphs of it: ``NeighborLoader`` slices node
    fields, so every batch then carries the true degrees, where the batch's own edges count only
    the sampled neighbours (and none for the nodes of the last hop) and would give training
    degrees that full-graph inference never sees. :func:`~graphattn.graphs.fit_nodes` applies it.
    """

    def forward(self, data: Data) -> Data:
        n = data.num_nodes
        check_edge_index(data.edge_index, num_keys=n, num_queries=n, nodes="data.num_nodes")
        data.in_degree = degree(data.edge_index[1], data.num_nodes, dtype=torch.long)
        return data


class GraphStructure(BaseTransform):
    r"""Adds what attention along ``pattern`` reads of each graph, once, as ``Data`` fields.

    * ``pair_index`` :math:`(2, E_p)`: the pattern's pairs on the real nodes (row 0 key, row 1
      query, sorted by query then key; PyG shifts it when batching);
    * ``pair_bucket`` :math:`(E_p)` uint8: hops from key to query, ``max_distance + 1`` beyond;
    * ``pair_edge`` :math:`(E_p)`: the column of each pair's graph edge counted from the graph's
      first edge, ``-1`` for non-edges (with ``edge_ids=True``);
    * ``pair_spec`` (str): what the fields were computed for, so that a model can tell;
    * ``pair_fingerprint`` :math:`(1, 3)`: :func:`edge_fingerprint` of the edges they were computed
      for (their order counts with ``edge_ids``), so that a model refuses a graph whose
      ``edge_index`` changed since.

    Args:
        pattern (str or Pattern, optional): the attention pattern. (default: :obj:`"graph"`)
        max_distance (int, optional): the largest hop count with a bucket of its own.
            (default: :obj:`8`)
        edge_ids (bool, optional): also store ``pair_edge``. (default: :obj:`True`)
        max_pairs (int, optional): refuse patterns with more pairs (``khop``: estimated as the
            expansion goes, with the memory they would need). (default: :obj:`None`)
    """

    def __init__(self, pattern: Union[str, P.Pattern] = "graph", max_distance: int = 8, edge_ids: bool = True,
                 max_pairs: Optional[int] = None):
        self.pattern = P.as_pattern(pattern)
        self.max_distance = check_int("max_distance", max_distance, 1)
        self.edge_ids = bool(edge_ids)
        self.max_pairs = None if max_pairs is None else check_int("max_pairs", max_pairs, 1)
        rest, self.num_virtual = split_virtual(self.pattern)
        self.spec = f"{rest!r};max_distance={self.max_distance}"

    def structure(self, data) -> dict:
        """The fields for ``data`` (a ``Data`` or ``Batch``), without changing it."""
        edge_index = check_edge_index(check_graph_data(data).edge_index, "data.edge_index")
        _, ptr = graph_layout(data)
        pairs, buckets = pattern_pairs(self.pattern, ptr, edge_index, self.max_distance, self.max_pairs)
        out = {"pair_index": pairs, "pair_bucket": buckets, "pair_spec": self.spec,
               "pair_fingerprint": edge_fingerprint(edge_index, ptr, ordered=self.edge_ids)}
        if self.edge_ids:
            ids = pair_edge_ids(edge_index, pairs, int(ptr[-1]))
            layout = Layout.of(ptr)
            edge_ptr = _edge_ptr(layout.batch, layout.sizes.numel(), edge_index)
            out["pair_edge"] = torch.where(ids >= 0, ids - edge_ptr[layout.batch[pairs[1]]], -1)
        return out

    def forward(self, data: Data) -> Data:
        for key, value in self.structure(data).items():
            data[key] = value
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.pattern)!r}, max_distance={self.max_distance})"
