r"""Random regular expanders per example: the graph counterpart of BigBird's random keys (Exphormer).

``expander(degree, seed)`` joins the nodes of every example by ``degree / 2`` random Hamiltonian
cycles: each cycle visits the nodes in an order drawn by the counter-based hash of
:func:`~graphattn.patterns.sparse.hash_ints` from ``(seed, example size, position, cycle)``,
and every node attends its two neighbours on each cycle. The union of ``r`` random Hamiltonian
cycles is contiguous to the random ``2r``-regular graph (Kim & Wormald, 2001), an expander
with high probability: its diameter is :math:`O(\log n)`, so ``graph | expander`` reaches every
node in a logarithmic number of layers with ``degree`` extra keys a node (Shirzad et al.,
"Exphormer: Sparse Transformers for Graphs", 2023).

As for ``random``, the keys are a pure function of the example, so an example gets the same
expander in any batch and on every call. Every node has exactly ``degree`` neighbour slots, and
the graph is connected (one cycle already is). Where two cycles happen to join the same two
nodes, the pair is attended once, so such a node has fewer distinct keys: about ``degree ** 2 / 4``
pairs per example coincide, however large it is. Examples with at most ``degree`` nodes are
attended densely (self excluded).
"""
from __future__ import annotations

import torch
from torch import Tensor

from graphattn.patterns.bands import dense
from graphattn.patterns.base import Pattern
from graphattn.patterns.sparse import hash_ints
from graphattn.utils.batch import Layout
from graphattn.utils.checks import check_int
from graphattn.utils.edges import candidates_to_edges, merge_edges

__all__ = ["Expander", "expander"]


class Expander(Pattern):
    """Union of ``degree / 2`` random Hamiltonian cycles per example; see :func:`expander`."""

    def __init__(self, degree: int, seed: int):
        self.degree = check_int("degree", degree, 2)
        if self.degree % 2:
            raise ValueError(f"degree must be even (the union of degree / 2 Hamiltonian cycles), got {degree}")
        if seed is None:
            raise ValueError("seed must be an int: expanders are reproducible by construction")
        self.seed = check_int("seed", seed, 0)

    def neighbours(self, layout: Layout) -> Tensor:
        """The ``degree`` neighbour slots of every node, ``[N, degree]`` in global numbering:
        its predecessor and successor on each cycle (the node itself in a one-node example)."""
        n = layout.sizes[layout.batch]  # [N]
        start = layout.ptr[layout.batch]
        out = torch.empty(layout.num_nodes, self.degree, dtype=torch.long, device=layout.ptr.device)
        seed = torch.full_like(n, self.seed)
        for cycle in range(self.degree // 2):
            h = hash_ints(seed, n, layout.pos, torch.full_like(n, cycle))
            # Visit order: by hash inside each example (stable sorts keep ties batch-invariant).
            order = torch.argsort(h, stable=True)
            order = order[torch.argsort(layout.batch[order], stable=True)]  # slot p holds node order[p]
            # Slot p of an example (local position pos[p]) holds node order[p]; its cycle
            # neighbours sit in the slots before and after it, around the example.
            size = n.clamp(min=1)
            out[order, 2 * cycle] = order[start + (layout.pos - 1) % size]
            out[order, 2 * cycle + 1] = order[start + (layout.pos + 1) % size]
        return out

    def build_edges(self, query, key):
        if key is not query:
            raise ValueError(f"{self!r} is a self-attention pattern: key_ptr must be None")
        table = self.neighbours(query).sort(1).values
        own = torch.arange(query.num_nodes, device=table.device).unsqueeze(1)
        repeat = torch.zeros_like(table, dtype=torch.bool)
        repeat[:, 1:] = table[:, 1:] == table[:, :-1]
        edges = candidates_to_edges(table, (table != own) & ~repeat)
        small = query.sizes <= self.degree
        if bool(small[query.batch].any()):  # a cycle cannot give `degree` distinct keys: attend all
            everyone = dense().build_edges(query, key)
            everyone = everyone[:, small[query.batch[everyone[1]]] & (everyone[0] != everyone[1])]
            edges = merge_edges(edges[:, ~small[query.batch[edges[1]]]], everyone, key.num_nodes)
        return edges

    def __repr__(self):
        return f"expander:{self.degree}:{self.seed}"


def expander(degree: int, seed: int) -> Pattern:
    """A random ``degree``-regular expander on every example, the same in any batch (see the module).

    ``degree`` is even; ``seed`` picks the cycles. Self pairs are not included (add ``graph``
    or ``window:0`` for them).
    """
    return Expander(degree, seed)
