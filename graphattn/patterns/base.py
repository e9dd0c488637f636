r"""The Pattern base class: a rule that says which keys each query may attend, as graph edges.

A batch of examples is laid out by ``ptr`` (LongTensor ``[B + 1]``, PyG's CSR offsets). A
pattern turns the layout into ``edge_index: [2, E]`` in PyG's convention, row 0 = key / source
``j``, row 1 = query / target ``i``, sorted by query then key, without duplicates and never
crossing examples. Patterns combine with ``|`` (union) and ``&`` (intersection), compare by
value, and print in the one grammar that :func:`~graphattn.patterns.parse` reads.

Writing a pattern of your own takes one method; the others are optional hooks::

    class EveryOther(Pattern):
        '''Query t attends the keys s of its example with s % 2 == t % 2.'''

        def build_edges(self, query, key):           # Layout -> sorted, unique [2, E]
            dense = Band(None, None).build_edges(query, key)
            keep = query.pos[dense[1]] % 2 == key.pos[dense[0]] % 2
            return dense[:, keep]

        def __repr__(self):
            return "every_other"

``query`` and ``key`` are :class:`~graphattn.utils.Layout`\ s (``ptr``, ``sizes``, per-node
``batch`` and ``pos``, and the batch's ``graph`` if it has one), the same object for
self-attention. Kernels, layers and applications never test a pattern's class: they ask it, and
every question has a default answer, so a pattern of one's own runs everywhere its answers allow.
The optional hooks:

* :meth:`allows`: membership of given pairs (default: a search in :meth:`build_edges`);
* :meth:`mask_rule`: the pattern as a pointwise rule, for FlexAttention (default: None, no
  closed form: the flex kernel then looks pairs up in the edges);
* :meth:`block_sparsity`: the tiles of the mask a block-sparse kernel visits (default: the edges
  counted per tile);
* :meth:`as_band`: the :class:`~graphattn.patterns.Band` the pattern is, if any (default: None);
  a band runs on the dense and window kernels, and :attr:`is_causal_band` and :attr:`is_dense`
  follow from it;
* :meth:`graph_radius` and :meth:`hop_pairs`: how many hops of the batch's graph its pairs span,
  and its pairs with their hop counts where its construction yields them (default: None, it
  follows no graph); :attr:`expands` says its pairs are a multi-hop expansion, built per chunk
  of queries on a large graph (default: False);
* :meth:`closed_form_reach` and :meth:`has_hub`: faster statistics;
* :meth:`simplify_union` and :meth:`simplify_intersection`: a simpler pattern for ``|`` and ``&``;
* the class attributes ``position_based`` (False when the pattern reads a graph), ``bipartite``
  (cross-attention) and ``contiguous`` (each query attends one run of keys).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from graphattn.patterns.reach import reach
from graphattn.patterns.tiles import BlockSparsity, edge_blocks
from graphattn.utils.batch import Layout, layouts
from graphattn.utils.checks import PtrLike, check_edge_index, check_int
from graphattn.utils.edges import edge_keys, merge_edges, sorted_isin

__all__ = ["Pattern", "Union", "Intersection", "check_pattern", "combined_repr", "MaskRule"]

#: ``rule(i, j) -> bool``: True where query ``i`` may attend key ``j`` (global indices, int64
#: tensors of one shape); see :meth:`Pattern.mask_rule`
MaskRule = Callable[[Tensor, Tensor], Tensor]


class Pattern:
    """Base class of attention patterns; see the module docstring for writing one."""

    #: depends only on example lengths and local positions (False: reads a graph)
    position_based: bool = True
    #: needs a separate key layout (``key_ptr``): cross-attention
    bipartite: bool = False
    #: every query attends one contiguous run of keys (see :class:`~graphattn.patterns.RangePattern`)
    contiguous: bool = False
    #: its pairs are a multi-hop expansion of a graph (``khop:k``, ``k > 1``), far more than the
    #: graph's edges: whole-graph inference builds them per chunk of queries, through
    #: :meth:`hop_pairs` (which a pattern that sets it implements)
    expands: bool = False

    # -- public API ---------------------------------------------------------------------

    def as_band(self) -> Optional["Pattern"]:
        """The :class:`~graphattn.patterns.Band` this pattern is (cross-attention answers for the
        pattern it wraps), or None. Kernels and layers ask this instead of testing classes."""
        return None

    @property
    def is_causal_band(self) -> bool:
        """A band that never looks ahead (``causal``, ``causal&window:w``): what incremental
        decoding needs. Wider than :attr:`Band.is_causal`, which is only the unbounded one."""
        band = self.as_band()
        return band is not None and band.right == 0

    @property
    def is_dense(self) -> bool:
        """Every query attends every key of its example, as far as :meth:`as_band` tells."""
        band = self.as_band()
        return band is not None and band.left is None and band.right is None

    def keys_grow_with_size(self) -> bool:
        """Whether some query's number of keys grows with its example's size: a band unbounded on
        one side (``dense``, ``causal``) or a hub (global or virtual nodes), on an example of any
        size. A sum over the keys (sigmoid attention) would grow with it too."""
        band = self.as_band()
        return (band is not None and (band.left is None or band.right is None)) or self.has_hub(1 << 62)

    def edge_index(self, ptr: PtrLike, key_ptr: Optional[PtrLike] = None, graph: Optional[Tensor] = None) -> Tensor:
        """Edges of the pattern on the batch ``ptr``.

        Args:
            ptr (LongTensor): offsets of the query batch, ``[B + 1]``.
            key_ptr (LongTensor, optional): offsets of the key batch ``[B + 1]`` for
                cross-attention (default: the query batch).
            graph (LongTensor, optional): the batch's own graph ``[2, E_g]`` in global numbering,
                for patterns that read one (``graph``, ``khop``).

        Returns:
            LongTensor ``[2, E]``: row 0 key ``j``, row 1 query ``i``; sorted by ``i`` then ``j``.
        """
        query, key = self.layouts(ptr, key_ptr, graph)
        return self.build_edges(query, key)

    def to_dense(self, ptr: PtrLike, key_ptr: Optional[PtrLike] = None, graph: Optional[Tensor] = None) -> Tensor:
        """Boolean mask ``[N_query, N_key]``, True where query ``i`` may attend key ``j``.

        Polarity: True = may attend (as SDPA's boolean ``attn_mask``; the opposite of
        ``nn.MultiheadAttention``'s masks).
        """
        query, key = self.layouts(ptr, key_ptr, graph)
        edge_index = self.build_edges(query, key)
        mask = torch.zeros(query.num_nodes, key.num_nodes, dtype=torch.bool, device=query.ptr.device)
        mask[edge_index[1], edge_index[0]] = True
        return mask

    def contains(self, edge_index: Tensor, ptr: PtrLike, key_ptr: Optional[PtrLike] = None,
                 graph: Optional[Tensor] = None) -> Tensor:
        """Whether each pair ``(edge_index[0], edge_index[1])`` is an edge of the pattern: bool ``[E]``."""
        query, key = self.layouts(ptr, key_ptr, graph)
        edge_index = check_edge_index(edge_index)
        if edge_index.numel() and (int(edge_index[0].max()) >= key.num_nodes or
                                   int(edge_index[1].max()) >= query.num_nodes):
            raise ValueError(f"edge_index points outside the batch: keys must be < {key.num_nodes} "
                             f"and queries < {query.num_nodes}")
        return self.allows(edge_index[0], edge_index[1], query, key)

    def stats(self, ptr: PtrLike, num_layers: int = 1, key_ptr: Optional[PtrLike] = None,
              graph: Optional[Tensor] = None) -> dict:
        """Statistics of the pattern on a batch.

        Returns a dict with ``num_nodes``, ``num_edges``, ``density`` (edges over the edges of
        the dense pattern), ``keys_per_query_min/mean/max``, ``max_path_length`` (the fewest
        layers after which every position of every example can have received information from
        every other position of its example; ``inf`` when some never can; ``None`` for
        cross-attention) and ``receptive_field_min/mean/max`` (positions, self included, whose
        information can reach a query after ``num_layers`` layers).
        """
        num_layers = check_int("num_layers", num_layers, 1)
        query, key = self.layouts(ptr, key_ptr, graph)
        edge_index = self.build_edges(query, key)
        keys_per_query = torch.bincount(edge_index[1], minlength=query.num_nodes)
        all_pairs = int((query.sizes * key.sizes).sum())
        out = {
            "num_examples": query.sizes.numel(), "num_nodes": query.num_nodes, "num_edges": edge_index.size(1),
            "density": edge_index.size(1) / all_pairs if all_pairs else 0.0,
            "keys_per_query_min": int(keys_per_query.min()) if query.num_nodes else 0,
            "keys_per_query_mean": float(keys_per_query.double().mean()) if query.num_nodes else 0.0,
            "keys_per_query_max": int(keys_per_query.max()) if query.num_nodes else 0,
            "num_layers": num_layers,
        }
        if key is not query:
            path, rf = None, keys_per_query.float()
        else:
            path, rf = reach(self, edge_index, query, num_layers)
        out["max_path_length"] = path
        out["receptive_field_min"] = int(rf.min()) if rf.numel() else 0
        out["receptive_field_mean"] = float(rf.double().mean()) if rf.numel() else 0.0
        out["receptive_field_max"] = int(rf.max()) if rf.numel() else 0
        return out

    def layouts(self, ptr: PtrLike, key_ptr: Optional[PtrLike] = None,
                graph: Optional[Tensor] = None) -> tuple[Layout, Layout]:
        """The checked query and key :class:`~graphattn.utils.Layout` of a batch for this pattern."""
        if self.bipartite and key_ptr is None:
            raise ValueError(f"{self!r} is a cross-attention pattern: key_ptr is required")
        if not self.position_based and key_ptr is not None:
            raise ValueError(f"{self!r} is defined on one graph: key_ptr must be None")
        if graph is not None:
            graph = check_edge_index(graph, "graph")
        return layouts(ptr, key_ptr, graph)

    def __or__(self, other: "Pattern") -> "Pattern":
        check_pattern(other, "right operand of |")
        return self.simplify_union(other) or Union(self, other)

    def __and__(self, other: "Pattern") -> "Pattern":
        check_pattern(other, "right operand of &")
        return self.simplify_intersection(other) or Intersection(self, other)

    def __eq__(self, other) -> bool:
        # By value: two graph patterns on different graphs differ even when their reprs agree.
        return type(self) is type(other) and _same(vars(self), vars(other))

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))

    def __repr__(self) -> str:  # pragma: no cover - every pattern prints its grammar name
        return f"{type(self).__name__}()"

    # -- hooks for subclasses -----------------------------------------------------------

    def build_edges(self, query: Layout, key: Layout) -> Tensor:  # pragma: no cover - abstract
        """Sorted (by query, then key), duplicate-free edges ``[2, E]`` in global numbering."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_edges(query, key)")

    def allows(self, src: Tensor, dst: Tensor, query: Layout, key: Layout) -> Tensor:
        """Whether each pair (key ``src[e]``, query ``dst[e]``) is an edge: bool ``[E]``."""
        ref = edge_keys(self.build_edges(query, key), key.num_nodes)
        return sorted_isin(dst * max(key.num_nodes, 1) + src, ref)

    def mask_rule(self, query: Layout, key: Layout) -> Optional[MaskRule]:
        """The pattern as a pointwise rule: ``rule(i, j)`` is True where query ``i`` may attend key ``j``.

        ``i`` and ``j`` are global query and key indices (int64 tensors of one shape, or
        broadcastable); the rule is what FlexAttention calls a ``mask_mod``, examples included
        (pairs across examples are False). It must be elementwise: comparisons, arithmetic and
        gathers from tensors computed here, no Python branch on values, so that ``torch.vmap``
        and ``torch.compile`` (a GPU kernel) can run it. Polarity: True = may attend.

        The default is None, no closed form: the flex kernel then looks pairs up in a hash table
        of :meth:`build_edges` (:func:`graphattn.ops.flex.mask_rule`), so any pattern has a rule.
        """
        return None

    def block_sparsity(self, query: Layout, key: Layout, block_q: int, block_k: int) -> BlockSparsity:
        """Which ``[block_q, block_k]`` tiles of the ``[N_q, N_k]`` mask hold an edge, and which
        are full (see :class:`~graphattn.patterns.tiles.BlockSparsity`): what FlexAttention's
        ``BlockMask`` needs. The default counts the edges of :meth:`build_edges` per tile (exact);
        patterns with a closed form answer without their edges."""
        return edge_blocks(self.build_edges(query, key), query.num_nodes, key.num_nodes, block_q, block_k)

    def graph_radius(self) -> Optional[int]:
        """The most hops of the batch's graph between the two ends of a pair, for a pattern that
        follows the graph (``graph``: 1, ``khop:k``: k, a union: its widest graph part), or None
        (the default: it follows no graph). A hop search for its pairs need go no deeper."""
        return None

    def hop_pairs(self, query: Layout, queries: Optional[Tensor] = None,
                  max_pairs: Optional[int] = None) -> Optional[tuple[Tensor, Tensor]]:
        """``(pairs [2, E], hops [E] uint8)``: the pattern's pairs of the sorted, distinct query
        nodes ``queries`` (default: all) and the hops from key to query along the graph it
        follows, where its own construction yields them (``graph``, ``khop``); more than
        ``max_pairs`` pairs raise a ``ValueError``. None (the default): callers count hops
        themselves (:func:`~graphattn.patterns.hops.hop_counts`)."""
        return None

    def closed_form_reach(self, n: int, num_layers: int) -> Optional[tuple[float, Tensor]]:
        """``(max path length, receptive field [n])`` of one example of length ``n``, if known."""
        return None

    def has_hub(self, n: int) -> bool:
        """Whether an example of length ``n`` has a position that reads, and is read by, all."""
        return False

    def simplify_union(self, other: "Pattern") -> Optional["Pattern"]:
        """A simpler pattern equal to ``self | other``, or None (then a :class:`Union` is built)."""
        return None

    def simplify_intersection(self, other: "Pattern") -> Optional["Pattern"]:
        """A simpler pattern equal to ``self & other``, or None (then an :class:`Intersection`)."""
        return None


def _same(a, b) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and \
            bool(torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_pattern(pattern, name: str) -> "Pattern":
    """``pattern`` if it is a :class:`Pattern`, else a ``TypeError`` naming the argument."""
    if not isinstance(pattern, Pattern):
        raise TypeError(f"{name} must be a graphattn Pattern, got {type(pattern).__name__}")
    return pattern


def combined_repr(a: Pattern, op: str, b: Pattern) -> str:
    """``a op b`` in the grammar, with the parentheses that make it parse back to the same tree:
    ``|`` binds looser than ``&`` and both group to the left, so an operand in which a looser
    operator (or, on the right, the same one) stands outside parentheses gets them."""
    def needs(text: str, ops: str) -> bool:
        depth = 0
        for char in text:
            depth += (char == "(") - (char == ")")
            if depth == 0 and char in ops:
                return True
        return False

    left, right = repr(a), repr(b)
    left = f"({left})" if op == "&" and needs(left, "|") else left
    right = f"({right})" if needs(right, "|&" if op == "&" else "|") else right
    return f"{left}{op}{right}"


class Union(Pattern):
    """``a | b``: the edges of either."""

    def __init__(self, a: Pattern, b: Pattern):
        self.a, self.b = check_pattern(a, "a"), check_pattern(b, "b")
        self.position_based = a.position_based and b.position_based
        self.bipartite = a.bipartite or b.bipartite

    def build_edges(self, query, key):
        return merge_edges(self.a.build_edges(query, key), self.b.build_edges(query, key), key.num_nodes)

    def allows(self, src, dst, query, key):
        return self.a.allows(src, dst, query, key) | self.b.allows(src, dst, query, key)

    def mask_rule(self, query, key):
        rule_a, rule_b = self.a.mask_rule(query, key), self.b.mask_rule(query, key)
        if rule_a is None or rule_b is None:  # a part without a closed form: the whole is looked up
            return None
        return lambda i, j: rule_a(i, j) | rule_b(i, j)

    def block_sparsity(self, query, key, block_q, block_k):
        return self.a.block_sparsity(query, key, block_q, block_k) | self.b.block_sparsity(query, key, block_q, block_k)

    def graph_radius(self):
        radii = [r for r in (self.a.graph_radius(), self.b.graph_radius()) if r is not None]
        return max(radii) if radii else None

    def has_hub(self, n):
        return self.a.has_hub(n) or self.b.has_hub(n)

    def keys_grow_with_size(self):
        return self.a.keys_grow_with_size() or self.b.keys_grow_with_size()

    def __repr__(self):
        return combined_repr(self.a, "|", self.b)


class Intersection(Pattern):
    """``a & b``: the edges of both, generated by one side and filtered by the other."""

    def __init__(self, a: Pattern, b: Pattern):
        check_pattern(a, "a"), check_pattern(b, "b")
        # Generate from the side that is not a (possibly huge) run of keys, filter by the other.
        self.generator, self.filter = (b, a) if a.contiguous and not b.contiguous else (a, b)
        self.a, self.b = a, b
        self.position_based = a.position_based and b.position_based
        self.bipartite = a.bipartite or b.bipartite

    def build_edges(self, query, key):
        edge_index = self.generator.build_edges(query, key)
        return edge_index[:, self.filter.allows(edge_index[0], edge_index[1], query, key)]

    def allows(self, src, dst, query, key):
        return self.a.allows(src, dst, query, key) & self.b.allows(src, dst, query, key)

    def mask_rule(self, query, key):
        rule_a, rule_b = self.a.mask_rule(query, key), self.b.mask_rule(query, key)
        if rule_a is None or rule_b is None:
            return None
        return lambda i, j: rule_a(i, j) & rule_b(i, j)

    def block_sparsity(self, query, key, block_q, block_k):
        return self.a.block_sparsity(query, key, block_q, block_k) & self.b.block_sparsity(query, key, block_q, block_k)

    def keys_grow_with_size(self):  # bounded where either side is
        return self.a.keys_grow_with_size() and self.b.keys_grow_with_size()

    def __repr__(self):
        return combined_repr(self.a, "&", self.b)
