r"""An encoder-only graph transformer for node- and graph-level tasks (molecules, social graphs).

Every layer is :class:`~graphattn.attention.GraphMultiheadAttention` along an attention
pattern built from the batch's graph: its edges (``"graph"``), the nodes within ``k`` hops
(``"khop:k"``), every node of the same graph (``"dense"``), or GraphGPS's pair of a local
message-passing layer and global dense attention (``"gps"``). Bond types and other edge
features bias the scores and add a value term on graph edges; on the pairs of a wider pattern
that are no edge, a learned per-head bias of the shortest-path-distance bucket tells near from
far (Graphormer's spatial encoding).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
from torch import Tensor, nn
from torch_geometric.nn import GINConv, GINEConv, global_add_pool, global_max_pool, global_mean_pool

from graphattn import patterns as P
from graphattn.attention import GraphMultiheadAttention

__all__ = [
    "GraphTransformer",
    "GraphTransformerLayer",
    "PATTERN_NAMES",
    "PE_ATTRS",
    "resolve_pattern",
    "shortest_path_buckets",
    "pattern_edge_attr",
]

#: the pattern names :class:`GraphTransformer` accepts (``K`` a positive integer)
PATTERN_NAMES = ("graph", "khop:K", "dense", "gps")
#: positional encodings and the ``Data`` attribute their PyG transform adds
PE_ATTRS = {
    "laplacian": "laplacian_eigenvector_pe",  # torch_geometric.transforms.AddLaplacianEigenvectorPE
    "random_walk": "random_walk_pe",  # torch_geometric.transforms.AddRandomWalkPE
}
POOLS = {"mean": global_mean_pool, "add": global_add_pool, "max": global_max_pool}
TASKS = ("node", "graph")


# --------------------------------------------------------------------------- pure helpers


def resolve_pattern(pattern: Union[str, P.Pattern]) -> tuple[str, Optional[int]]:
    """``(kind, k)`` of a pattern name: ``"graph"``, ``"khop:3"`` -> ``("khop", 3)``, ...

    A :class:`~graphattn.patterns.Pattern` gives ``("custom", None)``; anything else raises a
    ``ValueError`` that lists the valid names.
    """
    if isinstance(pattern, P.Pattern):
        return "custom", None
    valid = f"valid names: {', '.join(PATTERN_NAMES)} (or a graphattn Pattern)"
    if not isinstance(pattern, str):
        raise ValueError(f"pattern must be a name or a graphattn Pattern, got {type(pattern).__name__}; {valid}")
    name, _, arg = pattern.partition(":")
    if name in ("graph", "dense", "gps") and not arg:
        return name, None
    if name == "khop":
        if arg.isdigit() and int(arg) >= 1:
            return "khop", int(arg)
        raise ValueError(f"pattern {pattern!r} needs a hop count k >= 1 as 'khop:k'; {valid}")
    raise ValueError(f"unknown pattern {pattern!r}; {valid}")


def _global_keys(edge_index: Tensor, num_nodes: int) -> Tensor:
    return edge_index[1] * max(num_nodes, 1) + edge_index[0]  # sort by query, then key


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
    out = edge_attr.new_zeros(pairs.size(1), edge_attr.size(1))
    if edge_index.size(1) == 0 or pairs.size(1) == 0:
        return out
    keys, order = torch.sort(_global_keys(edge_index, num_nodes), stable=True)  # first of parallel edges
    wanted = _global_keys(pairs, num_nodes)
    pos = torch.searchsorted(keys, wanted).clamp_(max=keys.numel() - 1)
    found = keys[pos] == wanted
    out[found] = edge_attr[order[pos[found]]]
    return out


def shortest_path_buckets(edge_index: Tensor, pairs: Tensor, ptr: Tensor, max_distance: int) -> Tensor:
    r"""Graphormer's spatial bucket of each pattern pair: hops from key ``j`` to query ``i``.

    Bucket ``0`` is the node itself, ``1 .. max_distance`` the number of hops along
    ``edge_index`` (clipped to ``max_distance``), ``max_distance + 1`` "unreachable". Self pairs
    and graph edges need no search; for the other pairs :func:`scipy.sparse.csgraph.shortest_path`
    runs on each graph that has some (breadth-first, unweighted, directed as ``edge_index``).

    Args:
        edge_index (LongTensor): graph edges :math:`(2, E)`, row 0 source, row 1 target.
        pairs (LongTensor): pattern pairs :math:`(2, E_p)` sorted by query (as patterns give them).
        ptr (LongTensor): :math:`(B + 1)` offsets of the graphs; no edge crosses two graphs.
        max_distance (int): the largest distance with a bucket of its own (:math:`\ge 1`).

    Returns:
        LongTensor :math:`(E_p)` with values in ``[0, max_distance + 1]``.
    """
    max_distance = P._check_int("max_distance", max_distance, 1)
    unreachable = max_distance + 1
    num_nodes = int(ptr[-1])
    src, dst = pairs
    bucket = torch.full((pairs.size(1),), unreachable, dtype=torch.long, device=pairs.device)
    bucket[src == dst] = 0
    if edge_index.size(1):
        is_edge = P._sorted_isin(_global_keys(pairs, num_nodes), torch.unique(_global_keys(edge_index, num_nodes)))
        bucket[is_edge & (src != dst)] = 1
    rest = bucket == unreachable
    if not bool(rest.any()) or edge_index.size(1) == 0:
        return bucket
    # Per graph: scipy's BFS from the keys of the pairs still without a bucket.
    ptr_np = ptr.cpu().numpy()
    ei = edge_index.cpu().numpy()
    graph_of_edge = np.searchsorted(ptr_np, ei[1], side="right") - 1
    order = np.argsort(graph_of_edge, kind="stable")
    edge_ptr = np.searchsorted(graph_of_edge[order], np.arange(len(ptr_np)))
    rest_idx = rest.nonzero().squeeze(1).cpu().numpy()
    src_np, dst_np = src.cpu().numpy()[rest_idx], dst.cpu().numpy()[rest_idx]
    graph_of_pair = np.searchsorted(ptr_np, dst_np, side="right") - 1
    values = np.full(rest_idx.size, unreachable, dtype=np.int64)
    for b in np.unique(graph_of_pair):
        lo, n = ptr_np[b], ptr_np[b + 1] - ptr_np[b]
        local = ei[:, order[edge_ptr[b]:edge_ptr[b + 1]]] - lo
        if local.shape[1] == 0:
            continue
        adj = scipy.sparse.csr_matrix((np.ones(local.shape[1]), (local[0], local[1])), shape=(n, n))
        mine = np.nonzero(graph_of_pair == b)[0]
        sources, inverse = np.unique(src_np[mine] - lo, return_inverse=True)
        dist = scipy.sparse.csgraph.shortest_path(adj, directed=True, unweighted=True, indices=sources)
        d = dist[inverse, dst_np[mine] - lo]  # [pairs of graph b]
        values[mine] = np.where(np.isinf(d), unreachable, np.minimum(d, max_distance))
    bucket[rest] = torch.from_numpy(values).to(bucket.device)
    return bucket


def _batch_layout(data) -> tuple[Tensor, Tensor]:
    """``(batch [N], ptr [B + 1])`` of a ``Data`` (one graph) or a ``Batch``."""
    num_nodes = data.x.size(0)
    device = data.x.device
    batch = getattr(data, "batch", None)
    ptr = getattr(data, "ptr", None)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
    if ptr is None:
        counts = torch.bincount(batch, minlength=int(batch.max()) + 1 if num_nodes else 1)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return batch, ptr


def _mlp(channels: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


# --------------------------------------------------------------------------- layer


class GraphTransformerLayer(nn.Module):
    r"""A pre-norm transformer block on a graph, optionally with a local message-passing layer.

    .. math::
        \mathbf{h} \leftarrow \mathbf{h} + \mathrm{Dropout}\big(\mathrm{Attn}(\mathrm{LN}(\mathbf{h}))
            + \mathrm{Local}(\mathrm{LN}(\mathbf{h}))\big), \qquad
        \mathbf{h} \leftarrow \mathbf{h} + \mathrm{Dropout}\big(\mathrm{FF}(\mathrm{LN}(\mathbf{h}))\big)

    ``Attn`` is :class:`~graphattn.attention.GraphMultiheadAttention` along the pattern pairs
    with edge features as score bias and value term, plus a learned per-head bias of each pair's
    shortest-path bucket; ``Local`` (GraphGPS's MPNN) runs on the graph edges when given.

    Args:
        channels (int): node feature size.
        num_heads (int): attention heads.
        dropout (float, optional): dropout on both residual branches. (default: :obj:`0.0`)
        edge_dim (int, optional): size of the pattern edge features. (default: :obj:`None`)
        num_buckets (int, optional): shortest-path buckets with a learned bias. (default: :obj:`None`)
        local (MessagePassing, optional): GraphGPS's local layer ``local(x, edge_index[, edge_attr])``.
            (default: :obj:`None`)
        attn_kwargs (dict, optional): more arguments of the attention layer. (default: :obj:`None`)

    Shapes:
        - **input:** ``x`` :math:`(N, C)`, ``pairs`` :math:`(2, E_p)`, ``pair_attr``
          :math:`(E_p, D_e)`, ``buckets`` :math:`(E_p)`, ``edge_index`` :math:`(2, E)`,
          ``edge_attr`` :math:`(E, D_e)`
        - **output:** :math:`(N, C)`; with ``return_attention_weights=True`` also
          ``(pairs, alpha (E_p, H))``
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        dropout: float = 0.0,
        edge_dim: Optional[int] = None,
        num_buckets: Optional[int] = None,
        local: Optional[nn.Module] = None,
        attn_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.channels = channels
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(channels)
        self.attn = GraphMultiheadAttention(
            channels, num_heads, edge_dim=edge_dim, edge_value=edge_dim is not None, **(attn_kwargs or {})
        )
        self.spd_bias = nn.Embedding(num_buckets, num_heads) if num_buckets else None
        self.local = local
        self.norm2 = nn.LayerNorm(channels)
        self.ff = _mlp(channels, 2 * channels, channels, dropout)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.norm1, self.attn, self.norm2, self.ff[0], self.ff[3]):
            module.reset_parameters()
        if self.spd_bias is not None:
            nn.init.zeros_(self.spd_bias.weight)
        if self.local is not None:
            self.local.reset_parameters()

    def forward(
        self,
        x: Tensor,
        pairs: Tensor,
        pair_attr: Optional[Tensor] = None,
        buckets: Optional[Tensor] = None,
        edge_index: Optional[Tensor] = None,
        edge_attr: Optional[Tensor] = None,
        pattern: Optional[P.Pattern] = None,
        ptr: Optional[Tensor] = None,
        return_attention_weights: bool = False,
    ):
        z = self.norm1(x)
        bias = self.spd_bias(buckets) if self.spd_bias is not None and buckets is not None else None
        out = self.attn(
            z, pairs, pair_attr, pattern=pattern, ptr=ptr if pattern is not None else None,
            attn_bias=bias, return_attention_weights=return_attention_weights,
        )
        out, weights = out if return_attention_weights else (out, None)
        if self.local is not None:
            local_args = (z, edge_index) if isinstance(self.local, GINConv) else (z, edge_index, edge_attr)
            out = out + self.local(*local_args)
        x = x + self.drop(out)
        x = x + self.drop(self.ff(self.norm2(x)))
        return (x, weights) if return_attention_weights else x

    def __repr__(self) -> str:
        local = f", local={type(self.local).__name__}" if self.local is not None else ""
        return f"{type(self).__name__}({self.channels}, num_heads={self.attn.num_heads}{local})"


# --------------------------------------------------------------------------- model


class GraphTransformer(nn.Module):
    r"""Graph transformer for node and graph tasks; attention is message passing on a pattern.

    .. math::
        \mathbf{h}^{(0)}_i = W_x \mathbf{x}_i + W_p \mathbf{p}_i, \qquad
        \mathbf{h}^{(\ell)} = \mathrm{Block}_\ell\big(\mathbf{h}^{(\ell-1)}\big), \qquad
        \hat{y} = \mathrm{MLP}\big(\mathrm{LN}(\mathbf{h}^{(L)}_i)\big) \text{ or }
        \mathrm{MLP}\big(\mathrm{pool}_{i \in G}\, \mathrm{LN}(\mathbf{h}^{(L)}_i)\big)

    where :math:`\mathbf{p}_i` is a positional encoding (Laplacian eigenvectors, with random
    sign flips per graph in training, or random-walk return probabilities) and each block is a
    :class:`GraphTransformerLayer`. In every attention layer the score of a pattern pair
    :math:`j \to i` gets :math:`w_h^\top e_{ij} + b_h[\mathrm{spd}(j, i)]`: the encoded features
    of the graph edge (zero on non-edges, which also add a value term :math:`W_e e_{ij}`) and a
    learned bias of the shortest-path bucket (self, 1 .. ``max_distance`` hops, unreachable).

    Patterns (``pattern``): ``"graph"`` (the edges and self loops), ``"khop:k"`` (nodes within
    ``k`` hops), ``"dense"`` (all nodes of the same graph), ``"gps"`` (GraphGPS: dense attention
    plus a GINE layer on the edges, summed), or any :class:`~graphattn.patterns.Pattern`, laid out
    by the batch's ``ptr``. ``virtual_node=True`` adds a per-graph node state that is added to
    every node before each block and updated from the sum of the graph's nodes after it.

    Args:
        in_channels (int): node feature size (``data.x`` is float ``[N, in_channels]``).
        hidden_channels (int): width of the blocks.
        out_channels (int): output size (classes or regression targets).
        num_layers (int): number of blocks.
        num_heads (int): attention heads; ``hidden_channels`` must be divisible by it.
        edge_dim (int, optional): size of ``data.edge_attr`` (float). (default: :obj:`None`)
        pattern (str or Pattern, optional): the attention pattern. (default: :obj:`"graph"`)
        pe (str, optional): ``"laplacian"``, ``"random_walk"`` or :obj:`None`; the model reads
            the attribute that the PyG transform adds (see :data:`PE_ATTRS`). (default: :obj:`None`)
        pe_dim (int, optional): columns of the positional encoding. (default: :obj:`16`)
        dropout (float, optional): dropout of the residual branches and the head. (default: :obj:`0.0`)
        task (str, optional): ``"node"`` or ``"graph"``. (default: :obj:`"node"`)
        pool (str, optional): ``"mean"``, ``"add"`` or ``"max"`` for graph tasks. (default: :obj:`"mean"`)
        virtual_node (bool, optional): use a virtual node per graph. (default: :obj:`False`)
        max_distance (int, optional): largest shortest-path bucket of its own. (default: :obj:`8`)
        attn_kwargs (dict, optional): more arguments of every attention layer (e.g. ``dropout``,
            ``backend``; ``normalization="sigmoid"`` sums over the keys instead of averaging, so a
            node can count its neighbours, which softmax cannot). (default: :obj:`None`)

    Shapes:
        - **input:** a ``Data``/``Batch`` with ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`,
          optional ``edge_attr`` :math:`(E, D_e)`, ``batch`` :math:`(N)`, ``ptr`` :math:`(B + 1)`
        - **output:** :math:`(N, C_{out})` for node tasks, :math:`(B, C_{out})` for graph tasks;
          with ``return_attention_weights=True`` also a list of ``(pairs (2, E_p), alpha (E_p, H))``,
          one a layer
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        num_heads: int,
        edge_dim: Optional[int] = None,
        pattern: Union[str, P.Pattern] = "graph",
        pe: Optional[str] = None,
        pe_dim: int = 16,
        dropout: float = 0.0,
        task: str = "node",
        pool: str = "mean",
        virtual_node: bool = False,
        max_distance: int = 8,
        attn_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.in_channels = P._check_int("in_channels", in_channels, 1)
        self.hidden_channels = P._check_int("hidden_channels", hidden_channels, 1)
        self.out_channels = P._check_int("out_channels", out_channels, 1)
        self.num_layers = P._check_int("num_layers", num_layers, 1)
        self.edge_dim = None if edge_dim is None else P._check_int("edge_dim", edge_dim, 1)
        self.kind, self.k = resolve_pattern(pattern)
        self.pattern = pattern
        if pe is not None and pe not in PE_ATTRS:
            raise ValueError(f"pe must be one of {tuple(PE_ATTRS)} or None, got {pe!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {tuple(POOLS)}, got {pool!r}")
        self.pe, self.pe_dim = pe, P._check_int("pe_dim", pe_dim, 1)
        self.dropout, self.task, self.pool = float(dropout), task, pool
        self.max_distance = P._check_int("max_distance", max_distance, 1)

        self.node_encoder = nn.Linear(in_channels, hidden_channels)
        self.pe_encoder = nn.Linear(pe_dim, hidden_channels) if pe is not None else None
        self.edge_encoder = nn.Linear(edge_dim, hidden_channels) if edge_dim is not None else None
        self.layers = nn.ModuleList(
            GraphTransformerLayer(
                hidden_channels, num_heads, dropout, edge_dim=hidden_channels if edge_dim else None,
                num_buckets=self.max_distance + 2, local=self._local_layer() if self.kind == "gps" else None,
                attn_kwargs=attn_kwargs,
            )
            for _ in range(num_layers)
        )
        if virtual_node:
            self.virtual_node = nn.Embedding(1, hidden_channels)
            self.virtual_mlps = nn.ModuleList(
                _mlp(hidden_channels, 2 * hidden_channels, hidden_channels, dropout) for _ in range(num_layers - 1)
            )
        else:
            self.virtual_node, self.virtual_mlps = None, None
        self.norm = nn.LayerNorm(hidden_channels)
        self.head = _mlp(hidden_channels, hidden_channels, out_channels, dropout)
        self.reset_parameters()

    def _local_layer(self) -> nn.Module:
        c = self.hidden_channels
        mlp = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
        # GINE adds the (encoded, hence hidden-sized) bond features to each message.
        return GINEConv(mlp, train_eps=True) if self.edge_dim is not None else GINConv(mlp, train_eps=True)

    def reset_parameters(self) -> None:
        for module in (self.node_encoder, self.pe_encoder, self.edge_encoder, self.norm, self.head[0], self.head[3]):
            if module is not None:
                module.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        if self.virtual_node is not None:
            nn.init.zeros_(self.virtual_node.weight)
            for mlp in self.virtual_mlps:
                mlp[0].reset_parameters()
                mlp[3].reset_parameters()

    def attention_pattern(self, edge_index: Tensor) -> P.Pattern:
        """The pattern of this model on a batch whose graph edges are ``edge_index``."""
        if self.kind == "graph":
            return P.graph(edge_index)
        if self.kind == "khop":
            return P.khop(edge_index, self.k)
        if self.kind in ("dense", "gps"):
            return P.dense()
        return self.pattern

    def _positional_encoding(self, data, batch: Tensor, num_graphs: int) -> Tensor:
        attr = PE_ATTRS[self.pe]
        pe = getattr(data, attr, None)
        if pe is None:
            raise ValueError(
                f"pe={self.pe!r} reads data.{attr} [N, {self.pe_dim}]: add it with "
                f"graphattn.graph_data.positional_encoding({self.pe!r}, {self.pe_dim})"
            )
        if pe.dim() != 2 or pe.size(1) != self.pe_dim:
            raise ValueError(f"data.{attr} must have shape [N, pe_dim={self.pe_dim}], got {tuple(pe.shape)}")
        pe = pe.to(self.pe_encoder.weight.dtype)
        if self.pe == "laplacian" and self.training:
            # Eigenvectors are defined up to sign: flip each one at random, per graph.
            sign = torch.randint(0, 2, (num_graphs, self.pe_dim), device=pe.device) * 2 - 1
            pe = pe * sign[batch]
        return self.pe_encoder(pe)

    def forward(self, data, return_attention_weights: bool = False):
        x, edge_index = data.x, data.edge_index
        if x is None or not x.is_floating_point() or x.dim() != 2 or x.size(1) != self.in_channels:
            raise ValueError(f"data.x must be a float tensor [N, {self.in_channels}], got {getattr(x, 'shape', None)}")
        edge_attr = getattr(data, "edge_attr", None) if self.edge_encoder is not None else None
        if self.edge_encoder is not None and edge_attr is None:
            raise ValueError(f"the model has edge_dim={self.edge_dim}: data.edge_attr [E, {self.edge_dim}] is missing")
        batch, ptr = _batch_layout(data)
        num_graphs, num_nodes = ptr.numel() - 1, x.size(0)

        h = self.node_encoder(x)
        if self.pe_encoder is not None:
            h = h + self._positional_encoding(data, batch, num_graphs)
        edge_h = self.edge_encoder(edge_attr.to(h.dtype)) if edge_attr is not None else None

        pattern = self.attention_pattern(edge_index)
        pairs = pattern.edge_index(ptr)  # once for all layers
        pair_attr = pattern_edge_attr(edge_index, edge_h, pairs, num_nodes) if edge_h is not None else None
        buckets = shortest_path_buckets(edge_index, pairs, ptr, self.max_distance)

        vn = None
        if self.virtual_node is not None:
            vn = self.virtual_node.weight.expand(num_graphs, -1)
        weights = []
        for i, layer in enumerate(self.layers):
            if vn is not None:
                h = h + vn[batch]
            h = layer(h, pairs, pair_attr, buckets, edge_index, edge_h, pattern=pattern, ptr=ptr,
                      return_attention_weights=return_attention_weights)
            if return_attention_weights:
                h, w = h
                weights.append(w)
            if vn is not None and i < self.num_layers - 1:
                vn = vn + self.virtual_mlps[i](global_add_pool(h, batch, size=num_graphs) + vn)
        h = self.norm(h)
        if self.task == "graph":
            h = POOLS[self.pool](h, batch, size=num_graphs)
        out = self.head(h)
        return (out, weights) if return_attention_weights else out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, {self.out_channels}, "
            f"num_layers={self.num_layers}, num_heads={self.layers[0].attn.num_heads}, "
            f"pattern={self.pattern!r}, task={self.task!r})"
        )
