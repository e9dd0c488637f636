r"""GraphMultiheadAttention: one multi-head attention layer for every attention pattern."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from graphattn import patterns as P
from graphattn.banded import banded_attention
from graphattn.sparse import NORMALIZATIONS, CSRLayout, edge_attention

BACKENDS = ("auto", "edges", "dense", "window")


def _as_band(pattern: Optional[P.Pattern]) -> Optional[P.Band]:
    """The band a pattern is (cross-attention wraps one), or None."""
    inner = pattern.pattern if isinstance(pattern, P._Cross) else pattern
    return inner if isinstance(inner, P.Band) else None


def _lengths_uniform(sizes: Tensor) -> Optional[int]:
    """The common length of all examples, or None when they differ (or there are none)."""
    if sizes.numel() == 0:
        return None
    first = int(sizes[0])
    return first if bool((sizes == first).all()) else None


def dense_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    ptr: Tensor,
    key_ptr: Tensor,
    causal: bool = False,
    scale: Optional[float] = None,
    bias: Optional[Tensor] = None,
    edge_index: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    r"""Dense (or causal) attention of ragged examples through padded per-example blocks.

    Each example's queries attend all keys of the same example of ``key_ptr`` (with
    ``causal=True``: keys at local positions ``s <= t``). The padded batch goes through
    :func:`torch.nn.functional.scaled_dot_product_attention`, which picks fused kernels where
    the device has them; examples of equal length need no mask at all.

    Args:
        query, key, value (Tensor): ``[Nq, H, D]``, ``[Nk, H, D]``, ``[Nk, H, Dv]``.
        ptr, key_ptr (LongTensor): ``[B + 1]`` layouts of queries and keys.
        bias (Tensor, optional): score bias ``[E, H]`` on the edges ``edge_index`` of the pattern.
        need_weights (bool): also return the weights ``[E, H]`` on ``edge_index``.

    Returns:
        ``(out [Nq, H, Dv], weights [E, H] or None)``.
    """
    num_heads, head_dim = query.size(1), query.size(2)
    scale = head_dim**-0.5 if scale is None else scale
    q_sizes, k_sizes = ptr.diff(), key_ptr.diff()
    batch_size = q_sizes.numel()
    n_q, n_k = _lengths_uniform(q_sizes), _lengths_uniform(k_sizes)
    if query.size(0) == 0 or key.size(0) == 0:
        out = query.new_zeros(query.size(0), num_heads, value.size(-1))
        weights = query.new_zeros(0, num_heads) if need_weights else None
        return out, weights

    if n_q is not None and n_k is not None and bias is None and not need_weights:
        # Equal lengths: the flat batch is already a padded batch, as a view.
        q = query.view(batch_size, n_q, num_heads, head_dim).transpose(1, 2)
        k = key.view(batch_size, n_k, num_heads, head_dim).transpose(1, 2)
        v = value.view(batch_size, n_k, num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
        return out.transpose(1, 2).reshape(query.size(0), num_heads, -1), None

    max_q, max_k = int(q_sizes.max()), int(k_sizes.max())
    q_batch = torch.repeat_interleave(torch.arange(batch_size, device=query.device), q_sizes)
    k_batch = torch.repeat_interleave(torch.arange(batch_size, device=query.device), k_sizes)
    q_pos = torch.arange(query.size(0), device=query.device) - ptr[q_batch]
    k_pos = torch.arange(key.size(0), device=query.device) - key_ptr[k_batch]

    def pad(x: Tensor, batch: Tensor, pos: Tensor, length: int) -> Tensor:
        out = x.new_zeros(batch_size, length, *x.shape[1:])
        out[batch, pos] = x
        return out.transpose(1, 2)  # [B, H, n, D]

    q, k, v = pad(query, q_batch, q_pos, max_q), pad(key, k_batch, k_pos, max_k), pad(value, k_batch, k_pos, max_k)
    t = torch.arange(max_q, device=query.device)
    s = torch.arange(max_k, device=query.device)
    allowed = (s.unsqueeze(0) < k_sizes.view(-1, 1)).view(batch_size, 1, 1, max_k)  # key exists
    if causal:
        allowed = allowed & (s.view(1, 1, 1, -1) <= t.view(1, 1, -1, 1))
    # Rows without keys (padding, empty key examples) would be NaN in softmax; let them read
    # everything and discard them below.
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    if bias is not None:
        mask = torch.full((batch_size, num_heads, max_q, max_k), -math.inf, dtype=query.dtype, device=query.device)
        mask = mask.masked_fill(allowed, 0.0)
        src, dst = edge_index
        mask[q_batch[dst], :, q_pos[dst], k_pos[src]] = bias
    else:
        mask = allowed
    if need_weights:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~allowed, -math.inf) if mask.dtype == torch.bool else scores + mask
        weights_full = torch.softmax(scores, -1)
        dropped = F.dropout(weights_full, dropout_p) if dropout_p > 0 else weights_full
        out = torch.matmul(dropped, v)
        src, dst = edge_index
        weights = weights_full[q_batch[dst], :, q_pos[dst], k_pos[src]]
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
        weights = None
    out = out.transpose(1, 2)[q_batch, q_pos]  # [Nq, H, Dv]
    return out, weights


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
    A query with no allowed key outputs exactly zero.

    The parameters are laid out as in :class:`torch.nn.MultiheadAttention` (``in_proj_weight``
    or ``q/k/v_proj_weight``, ``in_proj_bias``, ``out_proj``): :meth:`from_torch` and
    :meth:`to_torch` copy weights both ways, and the outputs agree.

    Backends compute the same numbers and differ only in speed; ``backend="auto"`` chooses
    (see :meth:`select_backend`):

    * ``"edges"``: any pattern or graph; SDDMM / softmax / SpMM on the CSR form, memory
      :math:`O(E \cdot H)` besides the node features.
    * ``"dense"``: dense and causal patterns; padded examples through
      :func:`torch.nn.functional.scaled_dot_product_attention`.
    * ``"window"``: banded patterns (``window(w)``, ``causal() & window(w)``); blocked
      computation whose time and memory grow as :math:`n \cdot w`.

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
        backend (str, optional): ``"auto"``, ``"edges"``, ``"dense"`` or ``"window"``.
            (default: :obj:`"auto"`)
        edge_value (bool, optional): edge features also add a value term (needs ``edge_dim``).
            (default: :obj:`False`)
        edge_key (bool, optional): edge features also add a key term, so that their effect on
            the score depends on the query (needs ``edge_dim``). (default: :obj:`False`)

    Shapes:
        - **input:** node features :math:`(N, F)` or bipartite :math:`((N_k, F_k), (N_q, F))`,
          ``edge_index`` :math:`(2, E)` (row 0 key :math:`j`, row 1 query :math:`i`) or a
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
    ):
        super().__init__(aggr="add", node_dim=0)
        embed_dim = P._check_int("embed_dim", embed_dim, 1)
        num_heads = P._check_int("num_heads", num_heads, 1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        for name, flag in (("edge_value", edge_value), ("edge_key", edge_key)):
            if flag and edge_dim is None:
                raise ValueError(f"{name}=True needs edge_dim (the size of edge_attr)")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        self.kdim = embed_dim if kdim is None else P._check_int("kdim", kdim, 1)
        self.vdim = embed_dim if vdim is None else P._check_int("vdim", vdim, 1)
        self.edge_dim = None if edge_dim is None else P._check_int("edge_dim", edge_dim, 1)
        self.normalization = normalization
        self.backend = backend
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim

        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.lin_edge = nn.Linear(self.edge_dim, num_heads) if self.edge_dim else None
        self.lin_edge_value = nn.Linear(self.edge_dim, embed_dim, bias=False) if edge_value else None
        self.lin_edge_key = nn.Linear(self.edge_dim, embed_dim, bias=False) if edge_key else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same initialisation as torch.nn.MultiheadAttention.
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        self.out_proj.reset_parameters()
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.lin_edge_value is not None:
            self.lin_edge_value.reset_parameters()
        if self.lin_edge_key is not None:
            self.lin_edge_key.reset_parameters()

    # ------------------------------------------------------------------------- torch interop

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, **kwargs) -> "GraphMultiheadAttention":
        """A layer with the configuration and a copy of the weights of ``mha``."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("mha uses add_bias_kv or add_zero_attn, which have no graph counterpart")
        layer = cls(
            mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
            kdim=mha.kdim, vdim=mha.vdim, **kwargs,
        )
        missing = layer.load_state_dict(mha.state_dict(), strict=False)
        assert not missing.unexpected_keys, missing
        return layer

    def to_torch(self) -> nn.MultiheadAttention:
        """A ``torch.nn.MultiheadAttention(batch_first=True)`` with a copy of these weights."""
        if self.edge_dim is not None:
            raise ValueError("a layer with edge_dim has edge weights that nn.MultiheadAttention lacks")
        mha = nn.MultiheadAttention(
            self.embed_dim, self.num_heads, dropout=self.dropout, bias=self.in_proj_bias is not None,
            kdim=self.kdim, vdim=self.vdim, batch_first=True,
            device=self.out_proj.weight.device, dtype=self.out_proj.weight.dtype,
        )
        mha.load_state_dict(self.state_dict())
        return mha

    # ------------------------------------------------------------------------- backends

    def select_backend(self, pattern: Optional[P.Pattern], max_len: int = 0, needs_edges: bool = False) -> tuple[str, str]:
        """The backend ``forward`` uses and why, for a pattern and the longest example.

        Returns ``(backend, reason)``; ``reason`` says why a faster backend was not taken.
        Raises ``ValueError`` when the configured backend cannot compute the pattern.
        """
        band = _as_band(pattern)
        window_ok = band is not None and band.left is not None and band.right is not None
        if band is not None and max_len:
            # A band at least as wide as every example is dense (or causal) there.
            left = None if band.left is None or band.left >= max_len - 1 else band.left
            right = None if band.right is None or band.right >= max_len - 1 else band.right
            band = P.Band(left, right)
        dense_ok = band is not None and band.left is None and (band.right is None or band.right == 0)
        if self.normalization != "softmax":
            why = f"normalization={self.normalization!r} runs on the edges backend only"
            dense_ok = window_ok = False
        elif needs_edges:
            why = "edge value terms (edge_value=True) run on the edges backend only"
            dense_ok = window_ok = False
        elif pattern is None:
            why = "an explicit edge_index has no structure to exploit"
        elif band is None:
            why = f"{pattern!r} is not a band (dense, causal or window)"
        else:
            why = ""
        if self.backend == "auto":
            if dense_ok:
                return "dense", ""
            if window_ok:
                return "window", ""
            return "edges", why
        if self.backend == "dense" and not dense_ok:
            raise ValueError(f"backend 'dense' cannot compute {pattern!r}: {why or 'it is not dense or causal'}")
        if self.backend == "window" and not window_ok:
            raise ValueError(f"backend 'window' cannot compute {pattern!r}: {why or 'it is not a finite band'}")
        return self.backend, why

    # ------------------------------------------------------------------------- forward

    def _check_key_value(self, x, key_value):
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != self.embed_dim:
            raise ValueError(f"with key_value, x must be the query input [N, {self.embed_dim}], got {getattr(x, 'shape', type(x))}")
        if not isinstance(key_value, (tuple, list)) or len(key_value) != 2:
            raise TypeError("key_value must be a pair (keys, values) from project_key_value")
        k, v = key_value
        shape = (self.num_heads, self.head_dim)
        for name, t in (("keys", k), ("values", v)):
            if not isinstance(t, Tensor) or t.dim() != 3 or tuple(t.shape[1:]) != shape:
                raise ValueError(f"key_value {name} must have shape [N_k, {shape[0]}, {shape[1]}], got {getattr(t, 'shape', type(t))}")
        if k.size(0) != v.size(0):
            raise ValueError(f"key_value keys ({k.size(0)}) and values ({v.size(0)}) must have the same rows")
        return x, k, v

    def _check_inputs(self, x, value):
        if isinstance(x, Tensor):
            x_key = x_query = x
        elif isinstance(x, (tuple, list)) and len(x) == 2:
            x_key, x_query = x
        else:
            raise TypeError("x must be a Tensor [N, embed_dim] or a pair (x_key, x_query)")
        value = x_key if value is None else value
        for name, t, dim in (("x_query", x_query, self.embed_dim), ("x_key", x_key, self.kdim), ("value", value, self.vdim)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
            if not t.dtype.is_floating_point:
                raise TypeError(f"{name} must be a floating point tensor, got dtype {t.dtype}")
            if t.dim() != 2 or t.size(1) != dim:
                raise ValueError(f"{name} must have shape [N, {dim}], got {tuple(t.shape)}")
        if value.size(0) != x_key.size(0):
            raise ValueError(f"value must have one row per key ({x_key.size(0)}), got {value.size(0)}")
        return x_key, x_query, value, x_key is x_query

    def _weights(self):
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(e)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.split(e)
        return (w_q, b_q), (w_k, b_k), (w_v, b_v)

    def _project(self, x_key: Tensor, x_query: Tensor, value: Tensor):
        shape = (-1, self.num_heads, self.head_dim)
        if x_key is x_query and x_key is value and self._qkv_same_embed_dim:
            # One matmul for the three projections, as nn.MultiheadAttention does.
            q, k, v = F.linear(x_query, self.in_proj_weight, self.in_proj_bias).chunk(3, -1)
            return q.reshape(shape), k.reshape(shape), v.reshape(shape)  # [N, H, D] each
        (w_q, b_q), _, _ = self._weights()
        k, v = self.project_key_value(x_key, value)
        return F.linear(x_query, w_q, b_q).reshape(shape), k, v

    def project_key_value(self, x_key: Tensor, value: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Projected keys and values ``([N_k, H, D], [N_k, H, D])`` of key (and value) inputs.

        Incremental decoding caches these and hands them back through ``forward(key_value=...)``.
        """
        _, (w_k, b_k), (w_v, b_v) = self._weights()
        value = x_key if value is None else value
        shape = (-1, self.num_heads, self.head_dim)
        return F.linear(x_key, w_k, b_k).reshape(shape), F.linear(value, w_v, b_v).reshape(shape)

    def forward(
        self,
        x: Union[Tensor, tuple[Tensor, Tensor]],
        edge_index: Optional[Tensor] = None,
        edge_attr: Optional[Tensor] = None,
        *,
        value: Optional[Tensor] = None,
        pattern: Optional[P.Pattern] = None,
        ptr: Optional[Tensor] = None,
        key_ptr: Optional[Tensor] = None,
        attn_bias: Optional[Tensor] = None,
        key_value: Optional[tuple[Tensor, Tensor]] = None,
        return_attention_weights: bool = False,
    ):
        r"""Attend along ``edge_index`` or along the edges of ``pattern`` on the layout ``ptr``.

        Args:
            x (Tensor or (Tensor, Tensor)): node features ``[N, embed_dim]``, or
                ``(x_key [N_k, kdim], x_query [N_q, embed_dim])`` for cross-attention.
            edge_index (LongTensor, optional): ``[2, E]``, row 0 key, row 1 query. With a
                ``pattern`` it may be given as a cache of ``pattern.edge_index(ptr, key_ptr)``.
            edge_attr (Tensor, optional): ``[E, edge_dim]``, in the order of ``edge_index``
                (for a pattern: of ``pattern.edge_index(ptr, key_ptr)``).
            value (Tensor, optional): value inputs ``[N_k, vdim]`` (default: the key inputs).
            pattern (Pattern, optional): the attention pattern, instead of ``edge_index``.
            ptr (LongTensor, optional): ``[B + 1]`` layout of the queries (default: one example).
            key_ptr (LongTensor, optional): ``[B + 1]`` layout of the keys for cross-attention
                (default: ``ptr`` for self-attention, one example otherwise).
            attn_bias (Tensor, optional): ``[E, num_heads]`` added to the scores.
            key_value ((Tensor, Tensor), optional): keys and values already projected
                (:meth:`project_key_value`), ``[N_k, H, D]`` each; ``x`` is then the query
                input alone and attention is cross-attention (``key_ptr`` gives their layout).
            return_attention_weights (bool): also return ``(edge_index, alpha [E, num_heads])``.
        """
        if key_value is not None:
            x_query, k, v = self._check_key_value(x, key_value)
            x_key, value, is_self = None, None, False
            num_q, num_k = x_query.size(0), k.size(0)
        else:
            x_key, x_query, value, is_self = self._check_inputs(x, value)
            num_q, num_k = x_query.size(0), x_key.size(0)
        if pattern is None and edge_index is None:
            raise ValueError("give edge_index [2, E] or a pattern (with ptr)")
        if pattern is not None and not isinstance(pattern, P.Pattern):
            raise TypeError(f"pattern must be a graphattn Pattern, got {type(pattern).__name__}")
        if pattern is None and (ptr is not None or key_ptr is not None):
            raise ValueError("ptr and key_ptr describe a pattern's layout: give pattern too")

        if pattern is not None:
            ptr = P.check_ptr(torch.tensor([0, num_q]) if ptr is None else ptr, "ptr").to(x_query.device)
            if key_ptr is None:
                key_ptr = ptr if is_self else torch.tensor([0, num_k], device=x_query.device)
            key_ptr = P.check_ptr(key_ptr, "key_ptr").to(x_query.device)
            if int(ptr[-1]) != num_q:
                raise ValueError(f"ptr[-1] ({int(ptr[-1])}) must equal the number of queries ({num_q})")
            if int(key_ptr[-1]) != num_k:
                raise ValueError(f"key_ptr[-1] ({int(key_ptr[-1])}) must equal the number of keys ({num_k})")
            if key_ptr.numel() != ptr.numel():
                raise ValueError(f"key_ptr must describe as many examples as ptr ({ptr.numel() - 1}), got {key_ptr.numel() - 1}")
            max_len = int(torch.cat([ptr.diff(), key_ptr.diff()]).max()) if ptr.numel() > 1 else 0
        else:
            max_len = 0
        if edge_index is not None:
            edge_index = P._check_edge_index(edge_index)
            if edge_index.numel() and (int(edge_index[0].max()) >= num_k or int(edge_index[1].max()) >= num_q):
                raise ValueError(f"edge_index points outside x: keys must be < {num_k}, queries < {num_q}")
        if edge_attr is not None and self.lin_edge is None:
            raise ValueError("edge_attr was given but the layer has no edge_dim")

        backend, _ = self.select_backend(pattern, max_len, needs_edges=self.lin_edge_value is not None and edge_attr is not None)
        needs_edge_list = backend == "edges" or edge_attr is not None or attn_bias is not None or return_attention_weights
        order = None
        if edge_index is None and needs_edge_list:
            edge_index = pattern.edge_index(ptr, None if is_self and key_ptr is ptr else key_ptr)
        elif edge_index is not None and pattern is None:
            # Backends want edges sorted by query then key; keep the caller's order for alpha.
            keys = edge_index[1] * max(num_k, 1) + edge_index[0]
            if edge_index.size(1) > 1 and bool((keys[1:] < keys[:-1]).any()):
                order = torch.sort(keys).indices
        num_edges = edge_index.size(1) if edge_index is not None else None
        bias = self._edge_bias(edge_attr, attn_bias, num_edges)

        if order is not None:
            edge_index = edge_index[:, order]
            bias = None if bias is None else bias[order]
            edge_attr = None if edge_attr is None else edge_attr[order]

        if key_value is None:
            q, k, v = self._project(x_key, x_query, value)
        else:
            (w_q, b_q), _, _ = self._weights()
            q = F.linear(x_query, w_q, b_q).view(-1, self.num_heads, self.head_dim)
        if self.lin_edge_key is not None and edge_attr is not None:
            # <q_i, W e_ij> per edge and head: an [E, H, D] product, as the value term needs too.
            edge_key = self.lin_edge_key(edge_attr).view(-1, self.num_heads, self.head_dim)
            term = (q[edge_index[1]] * edge_key).sum(-1) * self.head_dim ** -0.5
            bias = term if bias is None else bias + term
        dropout_p = self.dropout if self.training else 0.0
        if backend == "edges":
            layout = CSRLayout.build(edge_index, num_q, num_k)
            edge_value = None
            if self.lin_edge_value is not None and edge_attr is not None:
                edge_value = self.lin_edge_value(edge_attr).view(-1, self.num_heads, self.head_dim)
            out, alpha = edge_attention(
                q, k, v, edge_index, bias=bias, edge_value=edge_value, normalization=self.normalization,
                dropout_p=dropout_p, training=self.training, layout=layout,
            )
            has_key = layout.rowptr.diff() > 0
        elif backend == "dense":
            causal = _as_band(pattern).right == 0
            out, alpha = dense_attention(
                q, k, v, ptr, key_ptr, causal=causal, bias=bias, edge_index=edge_index,
                dropout_p=dropout_p, need_weights=return_attention_weights,
            )
            has_key = key_ptr.diff().repeat_interleave(ptr.diff(), output_size=num_q) > 0
        else:
            band = _as_band(pattern)
            result = banded_attention(
                q, k, v, ptr, key_ptr, band.left, band.right, bias=bias,
                dropout_p=dropout_p, training=self.training, need_weights=return_attention_weights,
            )
            out, alpha = result if return_attention_weights else (result, None)
            lo, hi = band._ranges(*P._layouts(ptr, key_ptr))
            has_key = hi > lo

        out = self.out_proj(out.reshape(num_q, self.embed_dim))
        # No allowed key, no message: the output is exactly zero, bias included.
        out = out * has_key.unsqueeze(-1).to(out.dtype)
        if not return_attention_weights:
            return out
        if order is not None:  # back to the caller's edge order
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            edge_index, alpha = edge_index[:, inverse], alpha[inverse]
        return out, (edge_index, alpha)

    def _edge_bias(self, edge_attr, attn_bias, num_edges) -> Optional[Tensor]:
        bias = None
        if edge_attr is not None:
            if not isinstance(edge_attr, Tensor) or edge_attr.dim() != 2 or edge_attr.size(1) != self.edge_dim:
                raise ValueError(f"edge_attr must have shape [E, {self.edge_dim}], got {tuple(getattr(edge_attr, 'shape', ()))}")
            if edge_attr.size(0) != num_edges:
                raise ValueError(f"edge_attr must have one row per edge ({num_edges}), got {edge_attr.size(0)}")
            bias = self.lin_edge(edge_attr)
        if attn_bias is not None:
            if not isinstance(attn_bias, Tensor) or tuple(attn_bias.shape) != (num_edges, self.num_heads):
                raise ValueError(
                    f"attn_bias must have shape [E, num_heads] = [{num_edges}, {self.num_heads}], "
                    f"got {tuple(getattr(attn_bias, 'shape', ()))}"
                )
            bias = attn_bias if bias is None else bias + attn_bias
        return bias

    def __repr__(self) -> str:
        extra = f", edge_dim={self.edge_dim}" if self.edge_dim else ""
        extra += ", edge_value=True" if self.lin_edge_value is not None else ""
        extra += ", edge_key=True" if self.lin_edge_key is not None else ""
        if self.normalization != "softmax":
            extra += f", normalization={self.normalization!r}"
        return f"{type(self).__name__}({self.embed_dim}, num_heads={self.num_heads}{extra}, backend={self.backend!r})"
