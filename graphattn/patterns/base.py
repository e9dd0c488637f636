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
self-attention. Optional hooks: :meth:`allows` (membership of given pairs; default: a search in
:meth:`build_edges`), :meth:`mask_rule` (the pattern as a pointwise rule, for FlexAttention;
default: a search in the edges), :meth:`closed_form_reach` and :meth:`has_hub` (faster
statistics), and the class attributes ``position_based`` (False when the pattern reads a graph)
and ``bipartite``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from graphattn.patterns.reach import reach
from graphattn.utils.batch import Layout, layouts
from graphattn.utils.checks import PtrLike, check_edge_index, check_int
from graphattn.utils.edges import edge_keys, merge_edges, sorted_isin

__all__ = ["Pattern", "Union", "Intersection", "check_pattern", "combined_repr", "MaskRule", "EdgeTable"]

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

    def mask_rule(self, query: Layout, key: Layout) -> MaskRule:
        """The pattern as a pointwise rule: ``rule(i, j)`` is True where query ``i`` may attend key ``j``.

        ``i`` and ``j`` are global query and key indices (int64 tensors of one shape, or
        broadcastable); the rule is what FlexAttention calls a ``mask_mod``, examples included
        (pairs across examples are False). It must be elementwise: comparisons, arithmetic and
        gathers from tensors computed here, no Python branch on values, so that ``torch.vmap``
        and ``torch.compile`` (a GPU kernel) can run it. Polarity: True = may attend.

        The default looks the pair up in a hash table of :meth:`build_edges` (:class:`EdgeTable`):
        any pattern has a rule. Patterns with a closed form override it.
        """
        return EdgeTable.of(self.build_edges(query, key)).rule

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
        return lambda i, j: rule_a(i, j) | rule_b(i, j)

    def has_hub(self, n):
        return self.a.has_hub(n) or self.b.has_hub(n)

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
        return lambda i, j: rule_a(i, j) & rule_b(i, j)

    def __repr__(self):
        return combined_repr(self.a, "&", self.b)


class EdgeTable(NamedTuple):
    """Edges as a hash table, for membership and position tests inside a kernel.

    The pointwise form of a pattern that has no closed one (graph patterns, patterns of one's
    own). Written here because FlexAttention needs a lookup that a compiled kernel can inline:
    each pair ``(i, j)`` becomes one int64 ``i << 32 | j``, hashed (Fibonacci hashing) into a
    table with linear probing; :meth:`find` checks the ``probes`` slots from the hash, each
    independent of the others. (A binary search over sorted keys chains its steps, and
    inductor's CPU FlexAttention template inlines such chains without sharing them: compiling
    took 12, 16, 29 and 204 s for 1 to 4 steps, 11 s for 8 independent probes;
    ``benchmarks/flex_compile.py``.) About 32 bytes an edge.
    """

    keys: Tensor  # [M + probes] the pair stored in each slot, -1 for none
    ids: Tensor  # [M + probes] its position in the sorted edge list (0 for none)
    bits: Tensor  # () M = 2 ** bits slots for the hashes, at most half full (a tensor: no kernel depends on it)
    probes: int  # slots a lookup checks: the largest displacement + 1, rounded up to a power of 2

    @staticmethod
    def of(edge_index: Tensor) -> "EdgeTable":
        """The table of ``edge_index [2, E]`` (row 0 key ``j``, row 1 query ``i``, no duplicates)."""
        num_edges = edge_index.size(1)
        bits = max(2 * num_edges - 1, 1).bit_length()
        pairs = edge_index[1] << 32 | edge_index[0]
        hashes = _hash(pairs, bits)
        order = torch.argsort(hashes, stable=True)
        sorted_hashes, rank = hashes[order], torch.arange(num_edges, device=pairs.device)
        # Linear probing without wrap-around, all at once: in hash order, each pair takes the first
        # free slot at or after its hash, i.e. slot_k = k + max over l <= k of (hash_l - l).
        slots = rank + torch.cummax(sorted_hashes - rank, 0).values if num_edges else rank
        probes = 1 << (int((slots - sorted_hashes).max()) if num_edges else 0).bit_length()
        size = (1 << bits) + probes
        keys = torch.full((size,), -1, dtype=torch.long, device=pairs.device)
        ids = torch.zeros(size, dtype=torch.long, device=pairs.device)
        keys[slots], ids[slots] = pairs[order], order
        return EdgeTable(keys, ids, torch.tensor(bits, device=pairs.device), probes)

    def find(self, i: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        """``(found, position)``: whether ``(j, i)`` is an edge (key ``j``, query ``i``), and its
        position in the sorted edge list (0 where it is none)."""
        pair = i.long() << 32 | j.long()
        start = _hash(pair, self.bits)
        found, position = None, None
        for probe in range(self.probes):
            hit = self.keys[start + probe] == pair
            here = torch.where(hit, self.ids[start + probe], 0)
            found, position = (hit, here) if found is None else (found | hit, position + here)
        return found, position

    def rule(self, i: Tensor, j: Tensor) -> Tensor:
        """The :data:`MaskRule` of the table."""
        return self.find(i, j)[0]

    def position(self, i: Tensor, j: Tensor) -> Tensor:
        """Where ``(j, i)`` sits in the sorted edge list (0 where it is no edge)."""
        return self.find(i, j)[1]


def _hash(pairs: Tensor, bits) -> Tensor:
    """Fibonacci hashing: the top ``bits`` (an int or a 0-d tensor) bits of ``pairs * 2^64 / golden
    ratio`` (wrapping); the mask clears the sign bits of the arithmetic shift."""
    return ((pairs * -7046029254386353131) >> (64 - bits)) & ((1 << bits) - 1)
