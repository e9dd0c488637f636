r"""An encoder-only graph transformer for node- and graph-level tasks (molecules, social graphs).

Every layer is :class:`~graphattn.nn.GraphMultiheadAttention` along an attention pattern built
from the batch's graph: its edges (``"graph"``), the nodes within ``k`` hops (``"khop:k"``),
every node of the same graph (``"dense"``), or any other pattern of the one grammar. Bond types
and other edge features bias the scores and add a value term on graph edges; on the pairs of a
wider pattern that are no edge, a learned per-head bias of the shortest-path-distance bucket
tells near from far (Graphormer's spatial encoding). ``local_mpnn=True`` adds GraphGPS's local
message-passing layer beside the attention.

What attention reads of the graph (pattern pairs, hop buckets, which pair is which edge) is
computed once per graph by ``model.transform`` (a PyG transform), never in ``forward``.
Virtual nodes (``"...|virtual:K"``) are added to every graph before the first block, carry
learned states through the blocks, and are removed before the head.
"""
from __future__ import annotations

import logging
from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINConv, GINEConv, JumpingKnowledge, global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.transforms import BaseTransform, Compose

from graphattn import patterns as P
from graphattn.nn.attention import GraphMultiheadAttention
from graphattn.nn.graph_inputs import (GraphState, as_graph_data, check_graph_data, edges_first, in_degree_of_batch,
                                       positional_features)
from graphattn.nn.mlp import mlp
from graphattn.nn.task_defaults import TASKS, task_defaults
from graphattn.patterns.virtual import virtual_pairs
from graphattn.transforms import PE_ATTRS, GraphStructure, InDegree, positional_encoding_transform
from graphattn.transforms.structure import check_fingerprint, gather_edge_attr, pair_edge_ids, pair_edge_ids_of_batch
from graphattn.utils.batch import graph_layout
from graphattn.utils.checks import check_choice, check_float, check_int, eager_only

log = logging.getLogger(__name__)

__all__ = ["GraphTransformer", "GraphTransformerLayer", "GraphState", "positional_features", "POOLS", "TASKS", "JK_MODES"]

POOLS = {"mean": global_mean_pool, "add": global_add_pool, "max": global_max_pool}
#: jumping knowledge (Xu et al. 2018) over the blocks' outputs, by PyG's ``JumpingKnowledge`` mode names
JK_MODES = ("cat", "max")
DENSE = P.dense()


class GraphTransformerLayer(nn.Module):
    r"""A pre-norm transformer block on a graph, optionally with a local message-passing layer.

    .. math::
        \mathbf{h} \leftarrow \mathbf{h} + \mathrm{Dropout}\big(\mathrm{Attn}(\mathrm{LN}(\mathbf{h}))
            + \mathrm{Local}(\mathrm{LN}(\mathbf{h}))\big), \qquad
        \mathbf{h} \leftarrow \mathbf{h} + \mathrm{Dropout}\big(\mathrm{FF}(\mathrm{LN}(\mathbf{h}))\big)

    ``Attn`` is :class:`~graphattn.nn.GraphMultiheadAttention` along the pattern pairs
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
          ``edge_attr`` :math:`(E, D_e)`; ``ptr`` :math:`(B + 1)` only where ``pairs`` is
          ``dense().edge_index(ptr)`` (then the dense kernel computes the attention)
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
        self.channels = check_int("channels", channels, 1)
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(channels)
        self.attn = GraphMultiheadAttention(channels, num_heads, edge_dim=edge_dim, edge_value=edge_dim is not None,
                                            **(attn_kwargs or {}))
        self.spd_bias = nn.Embedding(num_buckets, num_heads) if num_buckets else None
        self.local = local
        self.norm2 = nn.LayerNorm(channels)
        self.ff = mlp(channels, 2 * channels, channels, dropout)
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
        return_attention_weights: bool = False,
        ptr: Optional[Tensor] = None,
    ):
        z = self.norm1(x)
        bias = self.spd_bias(buckets) if self.spd_bias is not None and buckets is not None else None
        if ptr is not None:  # pairs == dense().edge_index(ptr): the dense kernel, same numbers
            out = self.attn(z, pattern=DENSE, ptr=ptr, attn_bias=bias, return_attention_weights=return_attention_weights)
        else:
            out = self.attn(z, pairs, pair_attr, attn_bias=bias, return_attention_weights=return_attention_weights)
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


class GraphTransformer(nn.Module):
    r"""Graph transformer for node and graph tasks; attention is message passing on a pattern.

    .. math::
        \mathbf{h}^{(0)}_i = W_x \mathbf{x}_i + W_p \mathbf{p}_i + \mathbf{d}_{\min(\deg i, D)}, \qquad
        \mathbf{h}^{(\ell)} = \mathrm{Block}_\ell\big(\mathbf{h}^{(\ell-1)}\big), \qquad
        \hat{y} = \mathrm{MLP}\big(\mathrm{LN}(\mathbf{h}^{(L)}_i)\big) \text{ or }
        \mathrm{MLP}\big(\mathrm{pool}_{i \in G}\, \mathrm{LN}(\mathbf{h}^{(L)}_i)\big)

    where :math:`\mathbf{p}_i` is a positional encoding (Laplacian eigenvectors, with random
    sign flips per graph in training, or random-walk return probabilities),
    :math:`\mathbf{d}_k` a learned vector per in-degree (Graphormer's centrality encoding, degrees
    above ``max_degree`` :math:`= D` share one) and each block is a :class:`GraphTransformerLayer`.
    With ``jk`` the head reads :math:`\mathrm{JK}(\mathbf{h}^{(1)}, \dots, \mathbf{h}^{(L)})`
    (jumping knowledge: their concatenation or element-wise maximum) instead of
    :math:`\mathbf{h}^{(L)}`. In every attention layer the score of a pattern pair
    :math:`j \to i` gets :math:`w_h^\top e_{ij} + b_h[\mathrm{spd}(j, i)]`: the encoded features
    of the graph edge (zero on non-edges, which also add a value term :math:`W_e e_{ij}`) and a
    learned bias of the shortest-path bucket (self, 1 .. ``max_distance`` hops, farther or
    unreachable, and a bucket of its own for the pairs of virtual nodes).

    ``pattern`` is any pattern of :mod:`graphattn.patterns`, as an object or in the one grammar
    (:func:`~graphattn.patterns.parse`): ``"graph"`` (the edges and self loops), ``"graph:0"``
    (the neighbours only, while the residual carries the node's own state: Platonov et al.'s
    "-sep", ego and neighbours apart, for heterophilous graphs), ``"khop:2"``
    (nodes within 2 hops), ``"dense"`` (all nodes of the same graph), ``"graph|window:2"``, ...;
    graph patterns follow each batch's ``edge_index``, position patterns its node order;
    ``"graph|expander:4:0|virtual:1"`` is BigBird on graphs (Exphormer): the edges, a random
    4-regular expander, and one virtual node per graph joined both ways to all its nodes, whose
    state (a learned vector at the input) goes through every block like a node's and is dropped
    before the head.

    ``"auto"`` arguments are the task's (:data:`~graphattn.nn.task_defaults.TASK_DEFAULTS`): node tasks get 8
    blocks, dropout 0.2, a degree embedding and no positional encoding; graph tasks 4 blocks and random walks.

    ``model.transform`` is the PyG transform that computes, once per graph, what the model reads:
    the positional encoding (when ``pe`` is set, as by default for graph tasks), then what the
    pattern needs (:class:`~graphattn.transforms.GraphStructure`, alone as ``model.structure``).
    Apply it to the data set before training (``[model.transform(d) for d in data]``, a dataset's
    ``pre_transform``, a ``NeighborLoader``'s ``transform``); a batch without those fields gets
    them computed in ``forward``, with a one-time warning.
    ``local_mpnn=True`` adds GraphGPS's local message passing (GINE on the edges, GIN without
    edge features) beside the attention of every block: ``pattern="dense", local_mpnn=True`` is
    GraphGPS. The edge features then go to the local layer only, and the attention reads no edge
    features (as GraphGPS's does not).

    Virtual nodes come in two kinds, which a model may combine. ``virtual_node=True`` is the
    message-passing virtual node (Gilmer et al. 2017, OGB, GraphGPS): one pooled state per graph,
    added to every node before each block and updated by an MLP from the sum of the graph's nodes
    after it; attention never sees it. The pattern ``virtual:K`` (:mod:`graphattn.patterns.virtual`)
    instead adds ``K`` attention nodes per graph, BigBird's global tokens on graphs: with learned
    input states, they attend, and are attended by, every node of their graph in every layer.

    The forward is three public stages, ``readout(blocks(embed(data)))``, which the helpers that
    need the model's pieces reuse (layer-wise inference over chunks of a large graph, explainers):
    :meth:`embed` encodes nodes, positional encodings and edges and reads the attention pairs
    into a :class:`GraphState`; :meth:`blocks` runs the blocks (each :meth:`block_input`, the
    layer, :meth:`after_block`); :meth:`readout` drops the virtual nodes, normalises, pools
    for graph tasks and applies the head.

    PyG's ``Explainer`` calls ``model(x, edge_index, **kwargs)``, which ``forward`` accepts
    (other fields by their ``Data`` names: ``edge_attr``, the positional encoding, ``batch``).
    GNNExplainer's edge mask (``edge_mask_type="object"``) and AttentionExplainer then act on and
    report the graph's edges, length ``E``, for any pattern that attends every edge: while they
    run, each layer attends the pattern's pairs with the graph's edges first
    (:func:`~graphattn.nn.graph_inputs.edges_first`) through the edges kernel, and the other pairs
    (self loops, k-hop, virtual) keep their messages; a pattern that misses edges (``window:1`` on
    a graph) or parallel edges are refused. PyG's hard masks count one hop a message-passing layer,
    so for a node on ``khop:k`` AttentionExplainer zeroes edges that attention reaches in more hops;
    GNNExplainer's follow the gradient.

    Args:
        in_channels (int): node feature size (``data.x`` is float ``[N, in_channels]``).
        hidden_channels (int): width of the blocks.
        out_channels (int): output size (classes or regression targets).
        num_layers (int or str, optional): blocks; ``"auto"``: 8 (node), 4 (graph). (default: :obj:`"auto"`)
        num_heads (int): attention heads; ``hidden_channels`` must be divisible by it.
        edge_dim (int, optional): size of ``data.edge_attr`` (float). (default: :obj:`None`)
        pattern (str or Pattern, optional): the attention pattern. (default: :obj:`"graph"`)
        local_mpnn (bool, optional): GraphGPS's local GINE/GIN layer in every block. (default: :obj:`False`)
        pe (str, optional): ``"laplacian"``, ``"random_walk"``, :obj:`None` or ``"auto"``: random walks
            for graph tasks (better on two of three MoleculeNet sets, docs/real_graphs.md), none for node
            tasks (they cost Cora 5.8 points, and scale worst to large graphs). (default: :obj:`"auto"`)
        pe_dim (int, optional): columns of the positional encoding. (default: :obj:`16`)
        dropout (float or str, optional): dropout of the residual branches and the head; ``"auto"``:
            0.2 (node), 0 (graph: it cost all three MoleculeNet sets). (default: :obj:`"auto"`)
        task (str, optional): ``"node"`` or ``"graph"``. (default: :obj:`"node"`)
        pool (str, optional): ``"mean"``, ``"add"`` or ``"max"`` for graph tasks. (default: :obj:`"mean"`)
        virtual_node (bool, optional): a pooled, message-passing virtual node per graph (not
            attended; the attended kind is the pattern ``virtual:K``). (default: :obj:`False`)
        max_distance (int, optional): largest shortest-path bucket of its own; the search for
            hop counts goes this deep, so keep it small on large graphs. (default: :obj:`8`)
        attn_kwargs (dict, optional): more arguments of every attention layer (e.g. ``dropout``,
            ``backend``; ``project_values=False`` drops the value and output projections, so
            attention only weighs the propagation, as GAT's one projection does: Cora in
            docs/real_graphs.md). (default: :obj:`None`)
        edge_attention (bool, optional): whether the edge features bias the attention's scores and
            values; :obj:`None` means yes without ``local_mpnn`` and no with it (GraphGPS), ``True``
            with ``local_mpnn`` gives them to both. (default: :obj:`None`)
        max_degree (int or str, optional): a learned vector per in-degree ``0 .. max_degree`` (larger ones
            clipped) added to every node's input, so that attention that averages still knows how many
            neighbours a node has; :obj:`None`: off; ``"auto"``: 16 (node), off (graph). (default: :obj:`"auto"`)
        jk (str, optional): jumping knowledge over the blocks' outputs, ``"cat"`` or ``"max"``
            (PyG's :class:`~torch_geometric.nn.models.JumpingKnowledge`); :obj:`None` reads the
            last block only. (default: :obj:`None`)
        normalization (str, optional): ``"sigmoid"``, ``"softmax"`` or ``"relu"`` attention
            weights. :obj:`None` picks ``"sigmoid"``, whose weights sum over the keys so that a
            node can count its neighbours (even with or better than softmax on the seven sets of
            docs/real_graphs.md), unless a query's keys grow with the graph (``dense``, ``causal``,
            global or virtual nodes: :meth:`~graphattn.patterns.Pattern.keys_grow_with_size`),
            where a sum would grow too: there ``"softmax"``. (default: :obj:`None`)

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
        num_layers: Union[int, str] = "auto",
        num_heads: int = 4,
        edge_dim: Optional[int] = None,
        pattern: Union[str, P.Pattern] = "graph",
        pe: Optional[str] = "auto",
        pe_dim: int = 16,
        dropout: Union[float, str] = "auto",
        task: str = "node",
        pool: str = "mean",
        virtual_node: bool = False,
        max_distance: int = 8,
        local_mpnn: bool = False,
        attn_kwargs: Optional[dict] = None,
        edge_attention: Optional[bool] = None,
        max_degree: Union[int, str, None] = "auto",
        jk: Optional[str] = None,
        normalization: Optional[str] = None,
    ):
        super().__init__()
        num_layers, dropout, max_degree, pe = task_defaults(task, num_layers=num_layers, dropout=dropout,  # "auto"s
                                                            max_degree=max_degree, pe=pe).values()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.hidden_channels = check_int("hidden_channels", hidden_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.edge_dim = None if edge_dim is None else check_int("edge_dim", edge_dim, 1)
        self.pattern = P.as_pattern(pattern)
        if "normalization" in (attn_kwargs or {}):
            raise ValueError("pass the attention's normalization as GraphTransformer(normalization=...)")
        self.normalization = normalization or ("softmax" if self.pattern.keys_grow_with_size() else "sigmoid")
        check_choice("pe", pe, (None, "auto", *PE_ATTRS))  # "auto" was resolved above: named for the message
        check_choice("pool", pool, tuple(POOLS))
        self.pe, self.pe_dim = pe, check_int("pe_dim", pe_dim, 1)
        self.dropout, self.task, self.pool = check_float("dropout", dropout, 0.0, 1.0, high_open=True), task, pool
        self.max_distance = check_int("max_distance", max_distance, 1)
        self.local_mpnn = bool(local_mpnn)
        self.max_degree = None if max_degree is None else check_int("max_degree", max_degree, 1)
        check_choice("jk", jk, (None, *JK_MODES))
        # As in GraphGPS, edge features go to the local layer when there is one, and the attention
        # is plain: per-pair edge terms on a dense pattern would cost [pairs, heads, channels].
        # edge_attention=True keeps them in the attention beside the local layer (GPS with bond-aware attention).
        self.pair_features = self.edge_dim is not None and (not self.local_mpnn if edge_attention is None
                                                            else bool(edge_attention))
        self.structure = GraphStructure(self.pattern, self.max_distance, edge_ids=self.pair_features)
        self.num_virtual = self.structure.num_virtual
        # Dense pairs without per-pair features are what SDPA computes on padded graphs, faster
        # than gathering [pairs, heads, channels] messages (the pairs stay the same, in the same order).
        self.dense_kernel = self.pattern == DENSE and not self.pair_features
        self._warned = set()  # what forward has computed for lack of model.transform, warned once each
        self.node_encoder = nn.Linear(in_channels, hidden_channels)
        self.pe_encoder = nn.Linear(pe_dim, hidden_channels) if pe is not None else None
        self.edge_encoder = nn.Linear(edge_dim, hidden_channels) if edge_dim is not None else None
        self.degree_encoder = nn.Embedding(self.max_degree + 1, hidden_channels) if self.max_degree else None
        self.layers = nn.ModuleList(
            GraphTransformerLayer(hidden_channels, num_heads, dropout,
                                  edge_dim=hidden_channels if self.pair_features else None,
                                  num_buckets=self.max_distance + 2 + (self.num_virtual > 0),
                                  attn_kwargs={**(attn_kwargs or {}), "normalization": self.normalization},
                                  local=self._local_layer() if local_mpnn else None)
            for _ in range(num_layers)
        )
        self.virtual_states = nn.Embedding(self.num_virtual, hidden_channels) if self.num_virtual else None
        self.virtual_node = nn.Embedding(1, hidden_channels) if virtual_node else None
        self.virtual_mlps = nn.ModuleList(mlp(hidden_channels, 2 * hidden_channels, hidden_channels, dropout)
                                          for _ in range(num_layers - 1)) if virtual_node else None
        self.jk = JumpingKnowledge(jk, hidden_channels, num_layers) if jk is not None else None
        readout_channels = hidden_channels * num_layers if jk == "cat" else hidden_channels
        self.norm = nn.LayerNorm(readout_channels)
        self.head = mlp(readout_channels, hidden_channels, out_channels, dropout)
        self.reset_parameters()

    def _local_layer(self) -> nn.Module:
        c = self.hidden_channels
        net = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
        # GINE adds the (encoded, hence hidden-sized) bond features to each message.
        return GINEConv(net, train_eps=True) if self.edge_dim is not None else GINConv(net, train_eps=True)

    def reset_parameters(self) -> None:
        for module in (self.node_encoder, self.pe_encoder, self.edge_encoder, self.norm, self.head[0], self.head[3]):
            if module is not None:
                module.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        for embedding in (self.virtual_states, self.degree_encoder):
            if embedding is not None:
                nn.init.normal_(embedding.weight, std=0.02)
        if self.virtual_node is not None:
            nn.init.zeros_(self.virtual_node.weight)
            for net in self.virtual_mlps:
                net[0].reset_parameters()
                net[3].reset_parameters()

    @property
    def transform(self) -> BaseTransform:
        """The PyG transform that adds what this model reads of each graph (see the class docstring)."""
        if self.pe is None:
            return self.structure
        return Compose([positional_encoding_transform(self.pe, self.pe_dim), self.structure])

    def _fields(self, data, ptr: Tensor, batch: Tensor) -> dict:
        """The structure fields of ``data``, computed here (with a one-time warning) if missing."""
        spec = getattr(data, "pair_spec", None)
        if spec is None:
            self._warn_once("attention pairs")
            return self.structure.structure(data)
        specs = {spec} if isinstance(spec, str) else set(spec)
        if specs != {self.structure.spec}:
            raise ValueError(f"the data's pairs were computed for {sorted(specs)}, the model attends "
                             f"{self.structure.spec!r}: apply this model's model.transform to the data")
        pair_edge = getattr(data, "pair_edge", None)
        if self.pair_features and pair_edge is None:
            raise ValueError("the model has edge_dim but data.pair_edge is missing: apply model.transform "
                             "(GraphStructure(edge_ids=True)) to the data")
        # The edges' order counts where the transform stored pair_edge (columns of edge_index).
        check_fingerprint(getattr(data, "pair_fingerprint", None), data.edge_index, ptr, batch, pair_edge is not None)
        return {"pair_index": data.pair_index, "pair_bucket": data.pair_bucket, "pair_edge": pair_edge}

    def _warn_once(self, what: str) -> None:
        if what not in self._warned:
            log.warning("%s: the data has no precomputed %s, so they are computed in every forward; apply "
                        "model.transform to the data set once (see GraphTransformer)", type(self).__name__, what)
            self._warned.add(what)

    def _pairs(self, data, ptr: Tensor, batch: Tensor, edge_h: Optional[Tensor], explaining: bool = False):
        """``(pairs, pair_attr, buckets)`` on the real nodes, then on the virtual ones too; while
        PyG's explainers run, the graph's edges come first (:func:`edges_first`)."""
        fields = self._fields(data, ptr, batch)
        pairs, buckets = fields["pair_index"], fields["pair_bucket"].long()
        pair_attr = ids = None
        if edge_h is not None or (explaining and fields.get("pair_edge") is not None):
            ids = pair_edge_ids_of_batch(fields["pair_edge"], pairs, data.edge_index, ptr, batch)
        elif explaining:  # a model without edge features stores no pair -> edge map: search it
            ids = pair_edge_ids(data.edge_index, pairs, data.x.size(0))
        if edge_h is not None:
            pair_attr = gather_edge_attr(edge_h, ids)
        if self.num_virtual:
            pairs, position = virtual_pairs(ptr, self.num_virtual, pairs)
            virtual_bucket = self.max_distance + 2
            buckets = buckets.new_full((pairs.size(1),), virtual_bucket).index_copy_(0, position, buckets)
            if pair_attr is not None:
                pair_attr = pair_attr.new_zeros(pairs.size(1), pair_attr.size(1)).index_copy(0, position, pair_attr)
            if ids is not None:
                ids = ids.new_full((pairs.size(1),), -1).index_copy_(0, position, ids)
        if explaining:
            order = edges_first(ids, data.edge_index, str(self.pattern))
            pairs, buckets = pairs[:, order], buckets[order]
            pair_attr = pair_attr[order] if pair_attr is not None else None
        return pairs, pair_attr, buckets

    @property
    def full_graph_transform(self) -> Optional[BaseTransform]:
        """What a whole graph needs before its subgraphs are sampled (the degree embedding's ``InDegree``)."""
        return InDegree() if self.degree_encoder is not None else None

    @property
    def explaining(self) -> bool:
        """Whether a PyG explainer is at work on an attention layer (an edge mask or message hooks
        set): the pairs then list the graph's edges first and take the edges kernel."""
        return any(layer.attn.explaining for layer in self.layers)

    # ------------------------------------------------------------------------- stages

    def embed(self, data, pairs: bool = True) -> GraphState:
        """Stage 1: the checked inputs as a :class:`GraphState`: encoded nodes (plus positional
        encoding; the learned states of the pattern's virtual nodes appended), encoded edges and,
        with ``pairs=True``, the attention pairs of the batch (from ``model.transform``'s fields).
        Layer-wise inference takes ``pairs=False`` and builds the pairs of each chunk itself."""
        edge_attr = check_graph_data(data, self.in_channels, self.node_encoder.weight.dtype, self.edge_dim)
        batch, ptr = graph_layout(data)
        num_graphs, num_nodes = ptr.numel() - 1, data.x.size(0)
        h = self.node_encoder(data.x)
        if self.pe_encoder is not None:
            pe = positional_features(data, self.pe, self.pe_dim, batch, num_graphs, flip_signs=self.training,
                                     on_missing=lambda: self._warn_once(f"positional encodings (pe={self.pe!r})"))
            h = h + self.pe_encoder(pe.to(h.dtype))
        if self.degree_encoder is not None:  # the graph's in-degree (InDegree's where stored), whatever the pattern
            h = h + self.degree_encoder(in_degree_of_batch(data, num_nodes).clamp(max=self.max_degree))
        edge_h = self.edge_encoder(edge_attr.to(h.dtype)) if edge_attr is not None else None
        if self.virtual_states is not None:  # example b's virtual nodes are rows N + b k .. N + b k + k - 1
            h = torch.cat([h, self.virtual_states.weight.repeat(num_graphs, 1)])
        vn = self.virtual_node.weight.expand(num_graphs, -1) if self.virtual_node is not None else None
        state = GraphState(h, vn, batch, ptr, num_nodes, data.edge_index, edge_h, None, None, None, None)
        if not pairs:
            return state
        explaining = self.explaining
        pair_index, pair_attr, buckets = self._pairs(data, ptr, batch, edge_h if self.pair_features else None, explaining)
        # Traced code keeps the pairs: the dense kernel would rebuild them from ptr, a data-dependent size.
        dense_ptr = ptr if self.dense_kernel and eager_only() and not explaining else None
        return state._replace(pairs=pair_index, pair_attr=pair_attr, buckets=buckets, dense_ptr=dense_ptr)

    def block_input(self, state: GraphState, i: int) -> Tensor:
        """The input of block ``i``: ``state.h`` with the per-graph ``virtual_node`` state added
        to every real node (``state.h`` itself without ``virtual_node=True``)."""
        if state.vn is None:
            return state.h
        n = state.num_nodes
        return torch.cat([state.h[:n] + state.vn[state.batch], state.h[n:]])

    def after_block(self, state: GraphState, i: int, h: Tensor) -> GraphState:
        """The state after block ``i`` whose output is ``h``: the ``virtual_node`` state reads
        the sum of each graph's nodes (before every block but the first); with ``jk`` the real
        nodes' ``h`` is kept in ``state.outputs``."""
        vn = state.vn
        if vn is not None and i < self.num_layers - 1:
            pooled = global_add_pool(h[:state.num_nodes], state.batch, size=state.ptr.numel() - 1)
            vn = vn + self.virtual_mlps[i](pooled + vn)
        outputs = state.outputs + (h[:state.num_nodes],) if self.jk is not None else state.outputs
        return state._replace(h=h, vn=vn, outputs=outputs)

    def blocks(self, state: GraphState, return_attention_weights: bool = False):
        """Stage 2: every :class:`GraphTransformerLayer` along ``state.pairs``; returns the final
        state (and, with ``return_attention_weights=True``, one ``(pairs, alpha)`` a layer)."""
        if state.pairs is None:
            raise ValueError("blocks needs the attention pairs: use model.embed(data, pairs=True)")
        weights = []
        for i, layer in enumerate(self.layers):
            out = layer(self.block_input(state, i), state.pairs, state.pair_attr, state.buckets, state.edge_index,
                        state.edge_h, return_attention_weights=return_attention_weights, ptr=state.dense_ptr)
            if return_attention_weights:
                out, w = out
                weights.append(w)
            state = self.after_block(state, i, out)
        return (state, weights) if return_attention_weights else state

    def readout(self, state: GraphState) -> Tensor:
        """Stage 3: the head on the final real node states (virtual nodes dropped), pooled per
        graph for graph tasks: :math:`(N, C_{out})` or :math:`(B, C_{out})`; with ``jk``, of the
        jumping knowledge of ``state.outputs`` (one entry a block)."""
        if self.jk is not None:
            if len(state.outputs) != self.num_layers:
                raise ValueError(f"jk={self.jk.mode!r} reads the output of all {self.num_layers} blocks, "
                                 f"the state holds {len(state.outputs)}: run every block through after_block")
            h = self.norm(self.jk(list(state.outputs)))
        else:
            h = self.norm(state.h[:state.num_nodes])
        if self.task == "graph":
            h = POOLS[self.pool](h, state.batch, size=state.ptr.numel() - 1)
        return self.head(h)

    def forward(self, data, edge_index: Optional[Tensor] = None, edge_attr: Optional[Tensor] = None, *,
                batch: Optional[Tensor] = None, return_attention_weights: bool = False, **fields):
        """``readout(blocks(embed(data)))`` of a ``Data``/``Batch``; PyG's call form
        ``model(x, edge_index, edge_attr, batch=..., **fields)`` (other fields, such as a positional
        encoding, by their ``Data`` names) is what PyG's ``Explainer`` uses. Shapes: see the class."""
        data = as_graph_data(data, edge_index, edge_attr, batch, fields)
        state = self.blocks(self.embed(data), return_attention_weights=return_attention_weights)
        state, weights = state if return_attention_weights else (state, None)
        return (self.readout(state), weights) if return_attention_weights else self.readout(state)

    def __repr__(self) -> str:
        options = (("local_mpnn", self.local_mpnn), ("max_degree", self.max_degree),
                   ("jk", self.jk.mode if self.jk is not None else None), ("pe", self.pe))
        local = "".join(f", {key}={value!r}" for key, value in options if value)
        return (f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, num_heads={self.layers[0].attn.num_heads}, "
                f"pattern={str(self.pattern)!r}{local}, task={self.task!r})")
