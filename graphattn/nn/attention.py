r"""GraphMultiheadAttention: one multi-head attention layer for every attention pattern."""
from __future__ import annotations

import contextlib

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree

from graphattn.nn.pairs import (Pairs, as_band, as_edge_index, band_has_key, check_edge_terms, check_key_value,
                               check_node_inputs, choose_backend, graph_edges_first, pattern_layout, sorted_edges)
from graphattn.ops import (NORMALIZATIONS, CSRLayout, dense_attention, edge_attention, flex_attention, flex_available,
                           gathers_messages, keep_transpose, normalize, window_attention)
from graphattn.patterns import Pattern, as_pattern
from graphattn.utils.batch import ptr_to_batch
from graphattn.utils.checks import check_choice, check_edge_index, check_float, check_int, eager_only
from graphattn.utils.memory import recomputed_in_backward

__all__ = ["GraphMultiheadAttention", "BACKENDS", "RECOMPUTE_ABOVE"]

#: projected elements (q, k and v together) above which the edges backend recomputes them in backward
RECOMPUTE_ABOVE = 1 << 24

BACKENDS = ("auto", "edges", "dense", "window", "flex")


class GraphMultiheadAttention(MessagePassing):
    r"""Multi-head self-attention as message passing over the edges of an attention pattern.

    For every edge :math:`j \to i` of the pattern (or graph) and every head :math:`h`:

    .. math::
        q_i = W_q x_i + b_q, \quad k_j = W_k x_j + b_k, \quad v_j = W_v x_j + b_v

        s_{ij} = \frac{\langle q_i, k_j + W_k^e e_{ij} \rangle}{\sqrt{d_{head}}} + w_h^\top e_{ij}
                 + \beta_{ij}, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \to i} (s_{ij})

        \mathbf{x}'_i = W_o \, \Big\Vert_{h=1}^{H} \sum_{j \to i} \alpha_{ij}
                        \left(v_j + W_e e_{ij}\right) + b_o

    with edge features :math:`e_{ij}` (``edge_attr``, when ``edge_dim`` is set; the value term
    :math:`W_e e_{ij}` only with ``edge_value=True``, the query-dependent key term
    :math:`W_k^e e_{ij}` only with ``edge_key=True``, as in PyG's ``TransformerConv``) and a direct score bias
    :math:`\beta_{ij}` (``attn_bias``). ``normalization="relu"`` replaces the softmax by
    :math:`\mathrm{relu}(s_{ij}) / |\{j \to i\}|`, ``"sigmoid"`` by :math:`\sigma(s_{ij})`.
    A query with no allowed key outputs exactly zero. ``project_values=False`` drops
    :math:`W_v, b_v, W_o, b_o`: :math:`v_j = x_j` (split into heads) and the output is the
    concatenation of the heads.

    The parameters are laid out as in :class:`torch.nn.MultiheadAttention` (``in_proj_weight``
    or ``q/k/v_proj_weight``, ``in_proj_bias``, ``out_proj``): :meth:`from_torch` and
    :meth:`to_torch` copy weights both ways, and the outputs agree.

    Backends compute the same numbers and differ only in speed; ``backend="auto"`` chooses
    (see :meth:`select_backend`):

    * ``"edges"``: any pattern or graph; SDDMM / softmax / SpMM on the CSR form, memory
      :math:`O(E \cdot H)` besides the node features (:func:`~graphattn.ops.edge_attention`).
    * ``"dense"``: dense and causal patterns; padded examples through
      :func:`torch.nn.functional.scaled_dot_product_attention` (:func:`~graphattn.ops.dense_attention`).
    * ``"window"``: banded patterns (``window(w)``, ``causal() & window(w)``); blocked
      computation whose time and memory grow as :math:`n \cdot w` (:func:`~graphattn.ops.window_attention`).
    * ``"flex"``: any pattern with a softmax, through FlexAttention: the pattern's rule as the
      ``mask_mod``, its block structure as the ``BlockMask``, edge biases as a ``score_mod``
      (:func:`~graphattn.ops.flex_attention`). Chosen automatically on CUDA for sequence patterns
      other than dense and causal; on CPU only when asked, and forward only (torch 2.13 has no
      FlexAttention backward on CPU). No dropout on the weights and no ``edge_value``.

    Example (one query, two keys, ``head_dim = 64``: scores 112 and 96 are scaled to 14 and 12):

    >>> import torch
    >>> attn = GraphMultiheadAttention(64, num_heads=1, bias=False)
    >>> with torch.no_grad():
    ...     _ = attn.in_proj_weight.copy_(torch.eye(64).repeat(3, 1))  # q = k = v = x
    ...     _ = attn.out_proj.weight.copy_(torch.eye(64))
    >>> x_key, x_query = torch.zeros(2, 64), torch.zeros(1, 64)
    >>> x_key[0, 0], x_key[1, 0], x_query[0, 0] = 14.0, 12.0, 8.0
    >>> edge_index = torch.tensor([[0, 1], [0, 0]])  # keys 0 and 1 -> query 0
    >>> out, (_, alpha) = attn((x_key, x_query), edge_index, return_attention_weights=True)
    >>> alpha.squeeze(1).detach()
    tensor([0.8808, 0.1192])

    Args:
        embed_dim (int): size of query inputs and of the output.
        num_heads (int): number of heads; ``embed_dim`` must be divisible by it.
        dropout (float, optional): dropout on the attention weights, in training only.
            (default: :obj:`0.0`)
        bias (bool, optional): biases of the in- and out-projections. (default: :obj:`True`)
        kdim (int, optional): size of key inputs. (default: :obj:`embed_dim`)
        vdim (int, optional): size of value inputs. (default: :obj:`embed_dim`)
        edge_dim (int, optional): size of edge features that bias the scores per head.
            (default: :obj:`None`)
        normalization (str, optional): ``"softmax"``, ``"relu"`` or ``"sigmoid"``.
            (default: :obj:`"softmax"`)
        backend (str, optional): ``"auto"``, ``"edges"``, ``"dense"``, ``"window"`` or ``"flex"``.
            (default: :obj:`"auto"`)
        edge_value (bool, optional): edge features also add a value term (needs ``edge_dim``).
            (default: :obj:`False`)
        edge_key (bool, optional): edge features also add a key term, so that their effect on
            the score depends on the query (needs ``edge_dim``). (default: :obj:`False`)
        project_values (bool, optional): ``False`` drops :math:`W_v` and :math:`W_o` (and their
            biases): the values are the value inputs themselves, split into heads, and the
            attention only weighs how they propagate, as GAT's one shared projection does. Fewer
            parameters to fit from few labels (Cora: docs/real_graphs.md); needs
            ``vdim == embed_dim``, and :meth:`from_torch`/:meth:`to_torch` do not apply.
            (default: :obj:`True`)

    The attended pairs are ``edge_index`` alone, a ``pattern`` on the layout ``ptr``, or a
    graph pattern (``graph``, ``khop``, ...) on the graph ``edge_index``. ``edge_attr`` and
    ``attn_bias`` have one row per attended pair: in the order of ``edge_index`` when it is
    attended as given, in the canonical order of ``pattern.edge_index(ptr, key_ptr, graph)``
    (sorted by query, then key) when a pattern is given.

    Shapes:
        - **input:** node features :math:`(N, F)` or bipartite :math:`((N_k, F_k), (N_q, F))`,
          ``edge_index`` :math:`(2, E)` (row 0 key :math:`j`, row 1 query :math:`i`) and/or a
          ``pattern`` with ``ptr`` :math:`(B + 1)`, ``edge_attr`` :math:`(E, D_e)`,
          ``attn_bias`` :math:`(E, H)`
        - **output:** :math:`(N_q, F)`; with ``return_attention_weights=True`` also
          ``(edge_index (2, E), alpha (E, H))``
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        edge_dim: Optional[int] = None,
        normalization: str = "softmax",
        backend: str = "auto",
        edge_value: bool = False,
        edge_key: bool = False,
        project_values: bool = True,
    ):
        super().__init__(aggr="add", node_dim=0)
        embed_dim, num_heads = check_int("embed_dim", embed_dim, 1), check_int("num_heads", num_heads, 1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        check_choice("normalization", normalization, NORMALIZATIONS)
        check_choice("backend", backend, BACKENDS)
        for name, flag in (("edge_value", edge_value), ("edge_key", edge_key)):
            if flag and edge_dim is None:
                raise ValueError(f"{name}=True needs edge_dim (the size of edge_attr)")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout = check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        self.kdim = embed_dim if kdim is None else check_int("kdim", kdim, 1)
        self.vdim = embed_dim if vdim is None else check_int("vdim", vdim, 1)
        self.edge_dim = None if edge_dim is None else check_int("edge_dim", edge_dim, 1)
        self.normalization, self.backend = normalization, backend
        self.project_values = bool(project_values)
        if not self.project_values and self.vdim != embed_dim:
            raise ValueError(f"project_values=False passes the values through unprojected: vdim ({self.vdim}) "
                             f"must equal embed_dim ({embed_dim})")
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        n_proj = 3 if self.project_values else 2  # q, k (and v) stacked as torch's in_proj_weight
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(n_proj * embed_dim, embed_dim))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim)) if self.project_values else None
            self.register_parameter("in_proj_weight", None)
        self.in_proj_bias = nn.Parameter(torch.empty(n_proj * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias) if self.project_values else None
        self.lin_edge = nn.Linear(self.edge_dim, num_heads) if self.edge_dim else None
        self.lin_edge_value = nn.Linear(self.edge_dim, embed_dim, bias=False) if edge_value else None
        self.lin_edge_key = nn.Linear(self.edge_dim, embed_dim, bias=False) if edge_key else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same initialisation as torch.nn.MultiheadAttention.
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                if weight is not None:
                    nn.init.xavier_uniform_(weight)
        if self.out_proj is not None:
            self.out_proj.reset_parameters()
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            if self.out_proj is not None:
                nn.init.zeros_(self.out_proj.bias)
        for module in (self.lin_edge, self.lin_edge_value, self.lin_edge_key):
            if module is not None:
                module.reset_parameters()

    # ------------------------------------------------------------------------- torch interop

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, **kwargs) -> "GraphMultiheadAttention":
        """A layer with the configuration and a copy of the weights of ``mha``."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("mha uses add_bias_kv or add_zero_attn, which have no graph counterpart")
        if not kwargs.get("project_values", True):
            raise ValueError("project_values=False has no W_v and W_o to copy nn.MultiheadAttention's into")
        layer = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
                    kdim=mha.kdim, vdim=mha.vdim, **kwargs)
        result = layer.load_state_dict(mha.state_dict(), strict=False)
        if result.unexpected_keys:
            raise ValueError(f"mha has weights this layer cannot hold: {result.unexpected_keys}")
        return layer

    def to_torch(self) -> nn.MultiheadAttention:
        """A ``torch.nn.MultiheadAttention(batch_first=True)`` with a copy of these weights."""
        if self.edge_dim is not None:
            raise ValueError("a layer with edge_dim has edge weights that nn.MultiheadAttention lacks")
        if not self.project_values:
            raise ValueError("a layer with project_values=False lacks the W_v and W_o of nn.MultiheadAttention")
        weight = self.out_proj.weight
        mha = nn.MultiheadAttention(self.embed_dim, self.num_heads, dropout=self.dropout,
                                    bias=self.in_proj_bias is not None, kdim=self.kdim, vdim=self.vdim,
                                    batch_first=True, device=weight.device, dtype=weight.dtype)
        mha.load_state_dict(self.state_dict())
        return mha

    # ------------------------------------------------------------------------- backends

    def select_backend(self, pattern: Optional[Pattern], max_len: int = 0, needs_edges: bool = False,
                       device: Optional[Union[str, torch.device]] = None) -> tuple[str, str]:
        """The backend ``forward`` uses and why, for a pattern, the longest example and a device
        (default: the layer's).

        Returns ``(backend, reason)``; ``reason`` says why a faster backend was not taken.
        Raises ``ValueError`` when the configured backend cannot compute the pattern.
        """
        device = torch.device(device) if device is not None else self._dtype_ref.device
        return choose_backend(self.backend, self.normalization, pattern, max_len, needs_edges, device,
                              lambda: self._flex_cannot(device))

    def _flex_cannot(self, device: torch.device) -> str:
        """Why FlexAttention cannot run a softmax pattern on ``device`` ("" when it can)."""
        if self.dropout > 0 and self.training:
            return f"FlexAttention has no dropout on the weights (dropout={self.dropout} in training)"
        if not flex_available(device):
            return f"FlexAttention has no kernel on {device} (it needs a CUDA GPU of compute capability 8.0+, or the CPU)"
        return ""

    # ------------------------------------------------------------------------- forward

    def forward(
        self,
        x: Union[Tensor, tuple[Tensor, Tensor]],
        edge_index: Optional[Tensor] = None,
        edge_attr: Optional[Tensor] = None,
        *,
        value: Optional[Tensor] = None,
        pattern: Optional[Pattern] = None,
        ptr: Optional[Tensor] = None,
        key_ptr: Optional[Tensor] = None,
        attn_bias: Optional[Tensor] = None,
        key_value: Optional[tuple[Tensor, Tensor]] = None,
        return_attention_weights: bool = False,
    ):
        r"""Attend along ``edge_index``, along a ``pattern`` on the layout ``ptr``, or along a graph
        pattern on the graph ``edge_index``.

        Args:
            x (Tensor or (Tensor, Tensor)): node features ``[N, embed_dim]``, or
                ``(x_key [N_k, kdim], x_query [N_q, embed_dim])`` for cross-attention.
            edge_index (LongTensor, optional): ``[2, E]``, row 0 key, row 1 query: the pairs to
                attend, or, with a graph ``pattern`` (``graph()``, ``khop(k)``), the graph it follows.
            edge_attr (Tensor, optional): ``[E, edge_dim]``, one row per attended pair.
            value (Tensor, optional): value inputs ``[N_k, vdim]`` (default: the key inputs).
            pattern (Pattern, optional): the attention pattern.
            ptr (LongTensor, optional): ``[B + 1]`` layout of the queries (default: one example).
            key_ptr (LongTensor, optional): ``[B + 1]`` layout of the keys for cross-attention
                (default: ``ptr`` for self-attention, one example otherwise).
            attn_bias (Tensor, optional): ``[E, num_heads]`` added to the scores, one row per pair.
            key_value ((Tensor, Tensor), optional): keys and values already projected
                (:meth:`project_key_value`), ``[N_k, H, D]`` each; ``x`` is then the query
                input alone and attention is cross-attention (``key_ptr`` gives their layout).
            return_attention_weights (bool): also return ``(edge_index, alpha [E, num_heads])``.
        """
        x_key, x_query, value = self._check_inputs(x, value, key_value)
        num_q = x_query.size(0)
        num_k = key_value[0].size(0) if key_value is not None else x_key.size(0)
        is_self = key_value is None and x_key is x_query
        edge_index = as_edge_index(edge_index, num_q, num_k)
        if edge_attr is not None and self.lin_edge is None:
            raise ValueError("edge_attr was given but the layer has no edge_dim")
        needs_edges = self.lin_edge_value is not None and edge_attr is not None
        wants_pairs = edge_attr is not None or attn_bias is not None or return_attention_weights
        pairs, pattern = self._pairs(edge_index, pattern, ptr, key_ptr, (num_q, num_k, x_query.device), is_self,
                                     needs_edges, wants_pairs)
        bias, edge_attr = self._edge_terms(edge_attr, attn_bias, pairs)
        q, k, v = self._project(x_key, x_query, value, key_value)
        if self.lin_edge_key is not None and edge_attr is not None:
            # <q_i, W e_ij> per edge and head: an [E, H, D] product, as the value term needs too.
            edge_key = self.lin_edge_key(edge_attr).view(-1, self.num_heads, self.head_dim)
            term = (q[pairs.edge_index[1]] * edge_key).sum(-1) * self.head_dim ** -0.5
            bias = term if bias is None else bias + term
        if self.explaining:
            out, alpha, has_key = self._propagate(q, k, v, pairs, bias, edge_attr)
        else:
            out, alpha, has_key = self._attend(q, k, v, pairs, bias, edge_attr, return_attention_weights,
                                               pattern, edge_index, self._recipes(x_key, x_query, value, key_value))
        out = out.reshape(num_q, self.embed_dim)
        # No allowed key, no message: exactly zero (in place only after the projection, which keeps
        # its input, not its output: a kernel may keep its output for backward).
        mask = has_key.unsqueeze(-1).to(out.dtype)
        out = self.out_proj(out).mul_(mask) if self.out_proj is not None else out * mask
        if not return_attention_weights:
            return out
        edge_index, alpha = pairs.edge_index, alpha
        if pairs.order is not None:  # back to the caller's edge order
            inverse = torch.empty_like(pairs.order)
            inverse[pairs.order] = torch.arange(pairs.order.numel(), device=inverse.device)
            edge_index, alpha = edge_index[:, inverse], alpha[inverse]
        return out, (edge_index, alpha)

    def _check_inputs(self, x, value, key_value) -> tuple[Optional[Tensor], Tensor, Optional[Tensor]]:
        """``(x_key, x_query, value)``; with ``key_value`` the projected keys are checked instead."""
        if key_value is not None:
            check_key_value(x, key_value, self.embed_dim, self.num_heads, self.head_dim, self._dtype_ref.dtype)
            return None, x, None
        return check_node_inputs(x, value, self.embed_dim, self.kdim, self.vdim, self._dtype_ref.dtype)

    def _pairs(self, edge_index, pattern, ptr, key_ptr, sizes, is_self, needs_edges,
               wants_pairs) -> tuple[Pairs, Optional[Pattern]]:
        """Check how the pairs were given, choose the backend and build the edge list it needs;
        also the checked pattern (None without one), which the flex backend reads."""
        num_q, num_k, device = sizes
        if pattern is None and edge_index is None:
            raise ValueError("give edge_index [2, E] or a pattern (with ptr)")
        if edge_index is not None:
            edge_index = check_edge_index(edge_index, num_keys=num_k, num_queries=num_q)
        if pattern is None:
            if ptr is not None or key_ptr is not None:
                raise ValueError("ptr and key_ptr describe a pattern's layout: give pattern too")
            self.select_backend(None, 0, needs_edges, device)  # raises if a forced backend cannot run
            if self.explaining:  # messages in the caller's edge order, as the explainer's mask is
                return Pairs("edges", None, None, None, edge_index, None), None
            return sorted_edges(edge_index, num_k), None
        pattern = as_pattern(pattern)
        if edge_index is not None and pattern.position_based:
            raise ValueError(f"edge_index was given with the position-based pattern {pattern!r}, which reads no "
                             "graph: give the pairs as edge_index, or as a pattern, not both")
        ptr, key_ptr, max_len = pattern_layout(ptr, key_ptr, num_q, num_k, is_self, device)
        backend, _ = self.select_backend(pattern, max_len, needs_edges, device)
        pattern_edges = order = None
        if backend == "edges" or wants_pairs or self.explaining:
            pattern_edges = pattern.edge_index(ptr, None if is_self and key_ptr is ptr else key_ptr, graph=edge_index)
        if self.explaining:
            order = graph_edges_first(pattern_edges, edge_index, num_k)
            pattern_edges = pattern_edges if order is None else pattern_edges[:, order]
        band = as_band(pattern) if backend in ("dense", "window") else None
        return Pairs(backend, band, ptr, key_ptr, pattern_edges, order), pattern

    def _edge_terms(self, edge_attr, attn_bias, pairs: Pairs) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """The score bias ``[E, H]`` and edge features ``[E, edge_dim]``, both in sorted edge order."""
        num_edges = None if pairs.edge_index is None else pairs.edge_index.size(1)
        check_edge_terms(edge_attr, attn_bias, num_edges, self.edge_dim, self.num_heads, self._dtype_ref.dtype)
        bias = None
        if edge_attr is not None:
            edge_attr = edge_attr if pairs.order is None else edge_attr[pairs.order]
            bias = self.lin_edge(edge_attr)
        if attn_bias is not None:
            attn_bias = attn_bias if pairs.order is None else attn_bias[pairs.order]
            bias = attn_bias if bias is None else bias + attn_bias
        return bias, edge_attr

    @property
    def _dtype_ref(self) -> Tensor:
        """A weight every configuration has, for the layer's dtype and device."""
        return self.in_proj_weight if self.in_proj_weight is not None else self.q_proj_weight

    def _weights(self):
        """``(w, b)`` of q, k and v; v's are ``(None, None)`` with ``project_values=False``."""
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w = list(self.in_proj_weight.split(e))
        else:
            w = [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]
        b = [None] * 3 if self.in_proj_bias is None else list(self.in_proj_bias.split(e))
        w, b = w + [None] * (3 - len(w)), b + [None] * (3 - len(b))
        return tuple(zip(w, b))

    def _project(self, x_key, x_query, value, key_value) -> tuple[Tensor, Tensor, Tensor]:
        # Three matmuls, not one fused as nn.MultiheadAttention does: the gradients of the chunks
        # of a fused projection are concatenated in backward while they are all alive, twice the
        # projections' memory (1.5 GB at a million nodes and 64 channels), for little speed.
        shape = (-1, self.num_heads, self.head_dim)
        (w_q, b_q), _, _ = self._weights()
        k, v = key_value if key_value is not None else self.project_key_value(x_key, value)
        return F.linear(x_query, w_q, b_q).reshape(shape), k, v

    def _recipes(self, x_key, x_query, value, key_value) -> tuple:
        """How to project q, k and v again in backward, where the edges backend does so for large
        inputs (:data:`RECOMPUTE_ABOVE` elements: 768 MB at a million nodes and 64 channels, for
        three small matrix products); keys and values given projected are not this call's."""
        shape = (-1, self.num_heads, self.head_dim)
        (w_q, b_q), (w_k, b_k), (w_v, b_v) = self._weights()
        value = x_key if value is None else value
        return (lambda: F.linear(x_query, w_q, b_q).reshape(shape),
                (lambda: F.linear(x_key, w_k, b_k).reshape(shape)) if key_value is None else None,
                (lambda: project_value(value, w_v, b_v, shape)) if key_value is None else None)

    def project_key_value(self, x_key: Tensor, value: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Projected keys and values ``([N_k, H, D], [N_k, H, D])`` of key (and value) inputs.

        Incremental decoding caches these and hands them back through ``forward(key_value=...)``.
        """
        _, (w_k, b_k), (w_v, b_v) = self._weights()
        value = x_key if value is None else value
        shape = (-1, self.num_heads, self.head_dim)
        return F.linear(x_key, w_k, b_k).reshape(shape), project_value(value, w_v, b_v, shape)

    def _attend(self, q, k, v, pairs: Pairs, bias, edge_attr, need_weights, pattern=None,
                graph=None, recipes: tuple = (None, None, None)) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """``(out [N_q, H, D], weights [E, H] or None, has_key [N_q])`` from the chosen backend."""
        dropout_p = self.dropout if self.training else 0.0
        if pairs.backend == "flex":
            # Self-attention keeps one layout (graph patterns accept no other).
            key_ptr = None if pairs.key_ptr is pairs.ptr else pairs.key_ptr
            return flex_attention(q, k, v, pairs.ptr, key_ptr, pattern, graph=graph, bias=bias,
                                  edge_index=pairs.edge_index, need_weights=need_weights, return_has_key=True)
        if pairs.backend == "edges":
            num_edges = pairs.edge_index.size(1)
            gather = gathers_messages(num_edges, self.num_heads, self.head_dim)
            layout = CSRLayout.build(pairs.edge_index, q.size(0), k.size(0),
                                     transpose=keep_transpose(num_edges) and not gather)
            edge_value = None
            if self.lin_edge_value is not None and edge_attr is not None:
                edge_value = self.lin_edge_value(edge_attr).view(-1, self.num_heads, self.head_dim)
            # Sizes are compared in eager only: traced code would guard on them (and plans its own memory).
            large = eager_only() and sum(t.numel() for t in (q, k, v)) >= RECOMPUTE_ABOVE
            with recomputed_in_backward((q, k, v), recipes) if large else contextlib.nullcontext():
                out, alpha = edge_attention(q, k, v, pairs.edge_index, bias=bias, edge_value=edge_value,
                                            normalization=self.normalization, dropout_p=dropout_p,
                                            need_weights=need_weights, layout=layout)
            return out, alpha, layout.rowptr.diff() > 0
        if pairs.backend == "dense":
            out, alpha = dense_attention(q, k, v, pairs.ptr, pairs.key_ptr, causal=pairs.band.is_causal_band, bias=bias,
                                         edge_index=pairs.edge_index, dropout_p=dropout_p, need_weights=need_weights)
            batch = ptr_to_batch(pairs.ptr, check=False, num_nodes=q.size(0))
            has_key = pairs.key_ptr.index_select(0, batch + 1) > pairs.key_ptr.index_select(0, batch)
            return out, alpha, has_key
        band = pairs.band
        num_edges = None if pairs.edge_index is None else pairs.edge_index.size(1)
        out, alpha = window_attention(q, k, v, pairs.ptr, pairs.key_ptr, band.left, band.right, bias=bias,
                                      dropout_p=dropout_p, need_weights=need_weights, num_edges=num_edges)
        return out, alpha, band_has_key(band, pairs.ptr, pairs.key_ptr, q.size(0))

    # ------------------------------------------------------------------------- PyG's explainers

    @property
    def explaining(self) -> bool:
        """Whether this call runs through :meth:`propagate`: while a PyG explainer has set an edge
        mask (``explain=True``, GNNExplainer and friends) or hooks on the messages
        (``AttentionExplainer``). The messages are then materialised per edge and pass through
        :meth:`message` and the explain hooks, in the order of the caller's ``edge_index``."""
        return bool(self._explain) or bool(self._message_forward_hooks) or bool(self._message_forward_pre_hooks)

    def _propagate(self, q, k, v, pairs: Pairs, bias, edge_attr) -> tuple[Tensor, Tensor, Tensor]:
        """The reference path of message passing: ``[E, H, D]`` messages through :meth:`propagate`."""
        edge_index = pairs.edge_index
        src, dst = edge_index
        scores = (q[dst] * k[src]).sum(-1) * self.head_dim ** -0.5  # [E, H]
        if bias is not None:
            scores = scores + bias
        alpha = normalize(scores, dst, q.size(0), self.normalization)
        dropped = F.dropout(alpha, self.dropout, self.training)
        edge_value = None
        if self.lin_edge_value is not None and edge_attr is not None:
            edge_value = self.lin_edge_value(edge_attr).view(-1, self.num_heads, self.head_dim)
        out = self.propagate(edge_index, v=v, alpha=dropped, edge_value=edge_value, size=(k.size(0), q.size(0)))
        return out, alpha, degree(dst, q.size(0)) > 0

    def message(self, v_j: Tensor, alpha: Tensor, edge_value: Optional[Tensor]) -> Tensor:
        """The message of edge ``j -> i``: ``alpha_ij (v_j + W_e e_ij)``, ``[E, H, D]``."""
        return alpha.unsqueeze(-1) * (v_j if edge_value is None else v_j + edge_value)

    def explain_message(self, inputs: Tensor, dim_size: Optional[int]) -> Tensor:
        """PyG's edge mask on the messages. The caller's edges come first; pairs that a pattern adds
        beyond them (self loops, k-hop pairs) keep their messages, as PyG does for added self loops."""
        edge_mask = self._edge_mask
        if edge_mask is None:
            raise ValueError("Could not find a pre-defined 'edge_mask' to explain. Did you forget to initialize it?")
        if self._apply_sigmoid:
            edge_mask = edge_mask.sigmoid()
        extra = inputs.size(0) - edge_mask.size(0)
        if extra < 0:
            raise ValueError(f"the edge mask has {edge_mask.size(0)} entries but the layer attends "
                             f"{inputs.size(0)} pairs: explain a model with the edge_index it attends")
        edge_mask = torch.cat([edge_mask, edge_mask.new_ones(extra)])
        return inputs * edge_mask.view(-1, *([1] * (inputs.dim() - 1)))

    def __repr__(self) -> str:
        extra = f", edge_dim={self.edge_dim}" if self.edge_dim else ""
        extra += ", edge_value=True" if self.lin_edge_value is not None else ""
        extra += ", edge_key=True" if self.lin_edge_key is not None else ""
        extra += ", project_values=False" if not self.project_values else ""
        if self.normalization != "softmax":
            extra += f", normalization={self.normalization!r}"
        return f"{type(self).__name__}({self.embed_dim}, num_heads={self.num_heads}{extra}, backend={self.backend!r})"


def project_value(value: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], shape: tuple) -> Tensor:
    """``W_v value + b_v`` split into heads, or ``value`` itself split into heads (no ``W_v``)."""
    return (value if weight is None else F.linear(value, weight, bias)).reshape(shape)
