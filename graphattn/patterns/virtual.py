r"""Virtual nodes: ``k`` extra nodes per example joined both ways to every node of it.

They are the graph counterpart of BigBird's global tokens: any two nodes of an example are two
layers apart through a virtual node, and ``graph | expander | virtual`` is BigBird on graphs.
A graph has no spare positions to make global, so the nodes are added: on a layout whose every
example *ends* with its ``k`` virtual nodes, ``virtual_nodes(k)`` lets those attend, and be
attended by, every node of their example (themselves included). That is the pattern the grammar
names ``virtual:K``, and what :meth:`~graphattn.patterns.Pattern.stats` measures on a layout
from :func:`add_virtual_nodes`.

Models add the nodes around their layers (:class:`~graphattn.nn.GraphTransformer` learns their
states): :func:`split_virtual` takes the virtual part out of a pattern, the rest is built on
the real nodes as usual, and :func:`virtual_pairs` joins the virtual nodes to them. There the
virtual nodes are numbered after the batch's ``N`` real nodes (example ``b``'s ``r``-th is
``N + b * k + r``), so the real nodes and their pairs keep their indices.

These attended nodes are not :class:`~graphattn.nn.GraphTransformer`'s ``virtual_node=True``,
the message-passing virtual node of OGB and GraphGPS: one pooled state per graph added to every
node between blocks, which attention never sees. A model may use both.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.index import index2ptr

from graphattn.patterns.base import Intersection, Pattern, Union
from graphattn.utils.batch import Layout, ptr_to_batch
from graphattn.utils.checks import PtrLike, check_edge_index, check_int, check_ptr
from graphattn.utils.edges import expand_ranges, merge_edges

__all__ = ["VirtualNodes", "virtual_nodes", "split_virtual", "virtual_pairs", "insert_virtual_keys",
           "add_virtual_nodes"]


class VirtualNodes(Pattern):
    """The last ``k`` nodes of every example attend, and are attended by, all of it; see :func:`virtual_nodes`."""

    def __init__(self, k: int):
        self.k = check_int("k", k, 1)

    def _virtual(self, layout: Layout, nodes: Tensor) -> Tensor:
        return layout.pos[nodes] >= layout.sizes[layout.batch[nodes]] - self.k

    def build_edges(self, query, key):
        if key is not query:
            raise ValueError(f"{self!r} is a self-attention pattern: key_ptr must be None")
        nodes = torch.arange(query.num_nodes, device=query.ptr.device)
        base, size = query.ptr[query.batch], query.sizes[query.batch]
        full = self._virtual(query, nodes)
        rows = expand_ranges(base, torch.where(full, base + size, base))  # virtual queries read all
        # ... and every query reads the virtual keys.
        virtual_keys = expand_ranges(torch.maximum(base, base + size - self.k), base + size)
        return merge_edges(rows, virtual_keys, key.num_nodes)

    def allows(self, src, dst, query, key):
        same = query.batch[src] == query.batch[dst]
        return same & (self._virtual(query, dst) | self._virtual(query, src))

    def has_hub(self, n):
        return n >= 1

    def __repr__(self):
        return f"virtual:{self.k}"


def virtual_nodes(k: int) -> Pattern:
    """``k`` virtual nodes per example, joined both ways to every node of it (see the module).

    On a plain layout the last ``k`` nodes of each example play the virtual nodes; models that
    take the pattern add them instead (:func:`split_virtual`, :func:`virtual_pairs`).
    """
    return VirtualNodes(k)


def split_virtual(pattern: Pattern) -> tuple[Optional[Pattern], int]:
    """``(rest, k)``: the pattern without its virtual part, and the virtual nodes per example.

    ``graph|expander:4:0|virtual:1`` gives ``(graph|expander:4:0, 1)``; a pattern without
    virtual nodes gives ``(pattern, 0)``; ``virtual:2`` alone gives ``(None, 2)``. Virtual nodes
    join a pattern by union only: inside an intersection they raise a ``ValueError``.
    """
    if isinstance(pattern, VirtualNodes):
        return None, pattern.k
    if isinstance(pattern, Union):
        (a, k_a), (b, k_b) = split_virtual(pattern.a), split_virtual(pattern.b)
        rest = a if b is None else b if a is None else a | b
        return rest, max(k_a, k_b)
    if isinstance(pattern, Intersection) and (split_virtual(pattern.a)[1] or split_virtual(pattern.b)[1]):
        raise ValueError(f"virtual nodes join a pattern by union (|) only, got {pattern!r}")
    return pattern, 0


def virtual_pairs(ptr: PtrLike, k: int, pairs: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    r"""The pairs of ``k`` virtual nodes per example, numbered after the ``N`` real nodes, joined
    to given real pairs.

    Every real node ``i`` of example ``b`` attends the virtual nodes ``N + b k .. N + b k + k - 1``,
    which attend the whole example, themselves included. ``pairs`` (real pairs :math:`(2, P)`,
    sorted by query then key; default none) keep their order: each real query reads its real
    keys, then its virtual ones, so no sort is needed.

    Returns:
        ``(pairs' (2, P'), position (P,))``: the union, row 0 key, row 1 query, sorted by query
        then key, on ``N + B k`` nodes; and the column of each given pair in it.
    """
    ptr = check_ptr(ptr, "ptr")
    k = check_int("k", k, 1)
    n, num_examples = int(ptr[-1]), ptr.numel() - 1
    device = ptr.device
    pairs = torch.empty(2, 0, dtype=torch.long, device=device) if pairs is None else check_edge_index(pairs, "pairs")
    batch = ptr_to_batch(ptr, check=False)
    first_virtual = n + torch.arange(num_examples, device=device) * k  # [B]
    # Real queries read their real keys, then their example's virtual ones.
    real, position = insert_virtual_keys(pairs, first_virtual[batch], k)
    # Virtual queries read their example's real nodes, then its virtual nodes.
    example = torch.arange(num_examples, device=device).repeat_interleave(k)
    from_virtual = merge_edges(expand_ranges(ptr[example], ptr[example + 1]),
                               expand_ranges(first_virtual[example], first_virtual[example] + k), n + num_examples * k)
    from_virtual[1] += n
    return torch.cat([real, from_virtual], 1), position


def insert_virtual_keys(pairs: Tensor, first_virtual: Tensor, k: int, first_query: int = 0) -> tuple[Tensor, Tensor]:
    r"""Real pairs with every query's ``k`` virtual keys inserted after its real keys.

    The queries are the ``Q = first_virtual.numel()`` nodes ``first_query .. first_query + Q - 1``;
    query ``first_query + q`` reads the virtual keys ``first_virtual[q] .. first_virtual[q] + k - 1``
    after its keys in ``pairs``, which keep their order: numbered after the real nodes, the
    virtual keys sort last, so the result is sorted by query then key without a sort. The one
    place virtual keys are inserted: :func:`virtual_pairs` for a batch, layer-wise inference for a
    chunk of queries.

    Args:
        pairs (LongTensor): real pairs :math:`(2, P)` of those queries, sorted by query then key.
        first_virtual (LongTensor): :math:`(Q)` each query's first virtual key.
        k (int): virtual keys per query.
        first_query (int, optional): the first query's node. (default: :obj:`0`)

    Returns:
        ``(pairs' (2, P + Q k), position (P,))``: the pairs with the virtual keys, and the column
        of each given pair in them.
    """
    k = check_int("k", k, 1)
    count, num_pairs, device = first_virtual.numel(), pairs.size(1), first_virtual.device
    local = pairs[1] - first_query
    out = torch.empty(2, num_pairs + count * k, dtype=torch.long, device=device)
    # Query q: its P_q real pairs, then its k virtual keys (P_q + k columns from rowptr[q] + k q).
    rowptr = index2ptr(local, count) if num_pairs else torch.zeros(count + 1, dtype=torch.long, device=device)
    position = torch.arange(num_pairs, device=device) + k * local
    out[:, position] = pairs
    slots = ((rowptr[1:] + k * torch.arange(count, device=device)).unsqueeze(1) +
             torch.arange(k, device=device)).flatten()  # [Q k]
    out[0, slots] = (first_virtual.unsqueeze(1) + torch.arange(k, device=device)).flatten()
    out[1, slots] = (first_query + torch.arange(count, device=device)).repeat_interleave(k)
    return out, position


def add_virtual_nodes(ptr: PtrLike, k: int, graph: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
    """The layout with ``k`` virtual nodes at the end of every example, and the graph renumbered
    onto it: ``(ptr' [B + 1], graph' [2, E])``. For statistics of a pattern with virtual nodes:
    ``pattern.stats(*add_virtual_nodes(ptr, 1, edge_index))``."""
    ptr = check_ptr(ptr, "ptr")
    k = check_int("k", k, 1)
    shifted = ptr + k * torch.arange(ptr.numel(), device=ptr.device)
    if graph is None:
        return shifted, None
    graph = check_edge_index(graph, "graph")
    batch = ptr_to_batch(ptr, check=False)
    return shifted, graph + k * batch[graph]
