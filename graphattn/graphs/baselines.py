r"""PyG baselines: layers in the frame of :class:`~graphattn.nn.GraphTransformer` (the same
encoders, blocks and heads around one PyG layer type, so that a comparison measures the layer
alone), and PyG's linear-time graph transformers SGFormer and Polynormer as PyG ships them."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, GINConv, GINEConv, GPSConv, SAGEConv, TransformerConv
from torch_geometric.nn.models import Polynormer, SGFormer

from graphattn.nn.graph_transformer import POOLS, TASKS
from graphattn.nn.mlp import mlp
from graphattn.transforms import PE_ATTRS
from graphattn.utils.batch import graph_layout
from graphattn.utils.checks import check_choice, check_int

__all__ = ["BASELINES", "GNNBaseline", "GLOBAL_BASELINES", "GlobalBaseline", "RESIDUAL_GNNS", "ResidualGNN", "AttentiveFPModel"]

#: the PyG layers :class:`GNNBaseline` wraps
BASELINES = {"gcn": "GCNConv", "sage": "SAGEConv", "gatv2": "GATv2Conv", "transformer": "TransformerConv",
             "gps": "GPSConv"}
#: the layers of :class:`ResidualGNN` (Platonov et al.'s names; "-sep": the ego state beside the neighbours')
RESIDUAL_GNNS = ("gcn", "sage", "gat", "gat-sep", "gt", "gt-sep")
#: the PyG models :class:`GlobalBaseline` wraps
GLOBAL_BASELINES = {"sgformer": "SGFormer", "polynormer": "Polynormer"}


class GNNBaseline(nn.Module):
    r"""A stack of one PyG layer type with the encoders, blocks and head of :class:`GraphTransformer`.

    .. math::
        \mathbf{h} \leftarrow \mathbf{h} + \mathrm{Dropout}\big(\mathrm{Conv}(\mathrm{LN}(\mathbf{h}))\big),
        \qquad \mathbf{h} \leftarrow \mathbf{h} + \mathrm{Dropout}\big(\mathrm{FF}(\mathrm{LN}(\mathbf{h}))\big)

    with ``Conv`` one of :class:`~torch_geometric.nn.GCNConv` (no edge features),
    :class:`~torch_geometric.nn.GATv2Conv`, :class:`~torch_geometric.nn.TransformerConv` (both
    with ``edge_dim``) or :class:`~torch_geometric.nn.GPSConv` (GINE/GIN local layer plus
    ``nn.MultiheadAttention``; it has its own residuals, norms and feed-forward, so it replaces
    the whole block).

    Args:
        in_channels (int): node feature size.
        hidden_channels (int): width.
        out_channels (int): output size.
        num_layers (int): number of layers.
        conv (str): one of :data:`BASELINES`.
        num_heads (int, optional): heads of the attention layers. (default: :obj:`4`)
        edge_dim (int, optional): size of ``data.edge_attr``. (default: :obj:`None`)
        pe (str, optional): positional encoding read from the data, as in ``GraphTransformer``.
            (default: :obj:`None`)
        pe_dim (int, optional): its columns. (default: :obj:`16`)
        dropout (float, optional): dropout. (default: :obj:`0.0`)
        task (str, optional): ``"node"`` or ``"graph"``. (default: :obj:`"node"`)
        pool (str, optional): graph pooling. (default: :obj:`"mean"`)

    Shapes:
        - **input:** a ``Data``/``Batch`` as for :class:`GraphTransformer`
        - **output:** :math:`(N, C_{out})` or :math:`(B, C_{out})`
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        conv: str,
        num_heads: int = 4,
        edge_dim: Optional[int] = None,
        pe: Optional[str] = None,
        pe_dim: int = 16,
        dropout: float = 0.0,
        task: str = "node",
        pool: str = "mean",
    ):
        super().__init__()
        if conv not in BASELINES:
            raise ValueError(f"conv must be one of {tuple(BASELINES)}, got {conv!r}")
        check_choice("task", task, TASKS)
        check_choice("pool", pool, tuple(POOLS))
        if pe is not None:
            check_choice("pe", pe, tuple(PE_ATTRS))
        c = check_int("hidden_channels", hidden_channels, 1)
        if c % num_heads:
            raise ValueError(f"hidden_channels ({c}) must be divisible by num_heads ({num_heads})")
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, c, out_channels
        self.num_layers, self.conv, self.num_heads = check_int("num_layers", num_layers, 1), conv, num_heads
        self.edge_dim, self.pe, self.pe_dim, self.task, self.pool = edge_dim, pe, pe_dim, task, pool
        self.node_encoder = nn.Linear(in_channels, c)
        self.pe_encoder = nn.Linear(pe_dim, c) if pe is not None else None
        self.edge_encoder = nn.Linear(edge_dim, c) if edge_dim is not None else None
        self.convs = nn.ModuleList(self._conv(dropout) for _ in range(num_layers))
        block = conv != "gps"
        self.norms1 = nn.ModuleList(nn.LayerNorm(c) for _ in range(num_layers)) if block else None
        self.norms2 = nn.ModuleList(nn.LayerNorm(c) for _ in range(num_layers)) if block else None
        self.ffs = nn.ModuleList(mlp(c, 2 * c, c, dropout) for _ in range(num_layers)) if block else None
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(c)
        self.head = mlp(c, c, out_channels, dropout)
        self.reset_parameters()

    def _conv(self, dropout: float) -> nn.Module:
        c, h, edge_dim = self.hidden_channels, self.num_heads, (self.hidden_channels if self.edge_dim else None)
        if self.conv == "gcn":
            return GCNConv(c, c)
        if self.conv == "sage":
            return SAGEConv(c, c)
        if self.conv == "gatv2":
            return GATv2Conv(c, c // h, heads=h, edge_dim=edge_dim)
        if self.conv == "transformer":
            return TransformerConv(c, c // h, heads=h, edge_dim=edge_dim)
        mlp = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
        local = GINEConv(mlp, train_eps=True) if edge_dim else GINConv(mlp, train_eps=True)
        return GPSConv(c, local, heads=h, dropout=dropout)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, data) -> Tensor:
        x, edge_index = data.x, data.edge_index
        batch, ptr = graph_layout(data)
        num_graphs = ptr.numel() - 1
        h = self.node_encoder(x)
        if self.pe_encoder is not None:
            pe = getattr(data, PE_ATTRS[self.pe]).to(h.dtype)
            if self.pe == "laplacian" and self.training:
                pe = pe * (torch.randint(0, 2, (num_graphs, self.pe_dim), device=pe.device) * 2 - 1)[batch]
            h = h + self.pe_encoder(pe)
        e = self.edge_encoder(data.edge_attr.to(h.dtype)) if self.edge_encoder is not None else None
        for i, conv in enumerate(self.convs):
            if self.conv == "gps":
                h = conv(h, edge_index, batch, **({"edge_attr": e} if e is not None else {}))
                continue
            z = self.norms1[i](h)
            z = conv(z, edge_index) if self.conv in ("gcn", "sage") or e is None else conv(z, edge_index, edge_attr=e)
            h = h + self.drop(z)
            h = h + self.drop(self.ffs[i](self.norms2[i](h)))
        h = self.norm(h)
        if self.task == "graph":
            h = POOLS[self.pool](h, batch, size=num_graphs)
        return self.head(h)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, conv={BASELINES[self.conv]})")


class GlobalBaseline(nn.Module):
    r"""PyG's linear-time graph transformers for node classification, as PyG ships them.

    ``"sgformer"``: :class:`~torch_geometric.nn.models.SGFormer` (Wu et al., 2023): one layer of
    linear global attention over all nodes beside a GCN, mixed by ``graph_weight``.
    ``"polynormer"``: :class:`~torch_geometric.nn.models.Polynormer` (Deng et al., 2024): local
    attention layers, then linear global attention; as in PyG's example, it trains local-only
    for the first half of the epochs and with the global part after (:meth:`epoch_hook`).
    Global attention spans the whole graph (or sampled subgraph) given to ``forward``.

    Args:
        in_channels (int): node feature size.
        hidden_channels (int): width.
        out_channels (int): classes.
        num_layers (int): GNN layers (SGFormer) or local layers (Polynormer).
        model (str): one of :data:`GLOBAL_BASELINES`.
        num_heads (int, optional): heads of the global attention. (default: :obj:`1`)
        dropout (float, optional): dropout. (default: :obj:`0.0`)

    Shapes:
        - **input:** a ``Data`` with ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
        - **output:** :math:`(N, C_{out})` (SGFormer: log-probabilities)
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int, model: str,
                 num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        check_choice("model", model, tuple(GLOBAL_BASELINES))
        self.name, self.num_layers = model, check_int("num_layers", num_layers, 1)
        c = check_int("hidden_channels", hidden_channels, 1)
        if model == "sgformer":
            self.model = SGFormer(in_channels, c, out_channels, trans_num_layers=1, trans_num_heads=num_heads,
                                  trans_dropout=dropout, gnn_num_layers=num_layers, gnn_dropout=dropout)
        else:
            self.model = Polynormer(in_channels, c // num_heads, out_channels, local_layers=num_layers,
                                    global_layers=1, in_dropout=dropout, dropout=dropout, global_dropout=dropout,
                                    heads=num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.model.reset_parameters()

    def epoch_hook(self, epoch: int, epochs: int) -> None:
        """Polynormer: global attention from the middle of training on (PyG's example sets the
        same flag, ``_global``, after its local epochs)."""
        if self.name == "polynormer":
            setattr(self.model, "_global", epoch > epochs // 2)

    def forward(self, data) -> Tensor:
        batch, _ = graph_layout(data)
        return self.model(data.x, data.edge_index, batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({GLOBAL_BASELINES[self.name]}, num_layers={self.num_layers})"


class ResidualGNN(nn.Module):
    r"""The GNN baselines of Platonov et al. (ICLR 2023), "A critical look at the evaluation of GNNs
    under heterophily": PyG layers with residual connections and LayerNorm.

    .. math::
        \mathbf{h}^{(0)} = \mathrm{GELU}(\mathrm{Dropout}(W_{in}\mathbf{x})), \qquad
        \mathbf{h} \leftarrow \mathbf{h} + \mathrm{FF}\big(\mathrm{Agg}(\mathrm{LN}(\mathbf{h}))\big), \qquad
        \hat{y} = W_{out}\,\mathrm{LN}(\mathbf{h}^{(L)})

    with ``FF`` = Linear, Dropout, GELU, Linear, Dropout, and ``Agg`` one of :data:`RESIDUAL_GNNS`:
    PyG's ``GCNConv``, ``SAGEConv`` (mean of the neighbours beside the node's own state),
    ``GATConv`` and ``TransformerConv`` ("gt": attention over the neighbours only); a ``-sep``
    layer attends over the neighbours without self loops and concatenates the node's own state
    before ``FF`` (the paper's ego/neighbour separation). Graph tasks mean-pool before the head.

    Args:
        in_channels (int): node feature size.
        hidden_channels (int): width (the paper: 512).
        out_channels (int): classes (1 for a binary task with one logit).
        num_layers (int): residual layers (the paper: the best of 1 to 5).
        conv (str): one of :data:`RESIDUAL_GNNS`.
        num_heads (int, optional): heads of ``gat``/``gt``. (default: :obj:`8`)
        dropout (float, optional): dropout. (default: :obj:`0.2`)
        task (str, optional): ``"node"`` or ``"graph"``. (default: :obj:`"node"`)

    Shapes:
        - **input:** a ``Data``/``Batch`` with ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
        - **output:** :math:`(N, C_{out})` or :math:`(B, C_{out})`
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int, conv: str,
                 num_heads: int = 8, dropout: float = 0.2, task: str = "node"):
        super().__init__()
        check_choice("conv", conv, RESIDUAL_GNNS)
        check_choice("task", task, TASKS)
        c = check_int("hidden_channels", hidden_channels, 1)
        if conv in ("gat", "gat-sep", "gt", "gt-sep") and c % num_heads:
            raise ValueError(f"hidden_channels ({c}) must be divisible by num_heads ({num_heads})")
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, c, out_channels
        self.num_layers, self.conv, self.num_heads, self.task = check_int("num_layers", num_layers, 1), conv, num_heads, task
        self.sep = conv.endswith("-sep")
        self.encoder = nn.Linear(in_channels, c)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for _ in range(num_layers))
        self.convs = nn.ModuleList(self._conv() for _ in range(num_layers))
        width = 2 * c if self.sep else c
        self.ffs = nn.ModuleList(nn.Sequential(nn.Linear(width, c), nn.Dropout(dropout), nn.GELU(), nn.Linear(c, c),
                                               nn.Dropout(dropout)) for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, out_channels)
        self.reset_parameters()

    def _conv(self) -> nn.Module:
        c, h = self.hidden_channels, self.num_heads
        if self.conv == "gcn":
            return GCNConv(c, c)
        if self.conv == "sage":
            return SAGEConv(c, c)
        if self.conv.startswith("gat"):
            return GATConv(c, c // h, heads=h, add_self_loops=not self.sep)
        return TransformerConv(c, c // h, heads=h, root_weight=False)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, data) -> Tensor:
        h = F.gelu(self.drop(self.encoder(data.x)))
        for norm, conv, ff in zip(self.norms, self.convs, self.ffs):
            z = norm(h)
            message = conv(z, data.edge_index)
            h = h + ff(torch.cat([z, message], -1) if self.sep else message)
        h = self.norm(h)
        if self.task == "graph":
            batch, ptr = graph_layout(data)
            h = POOLS["mean"](h, batch, size=ptr.numel() - 1)
        return self.head(h)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, conv={self.conv!r})")


class AttentiveFPModel(nn.Module):
    r"""PyG's :class:`~torch_geometric.nn.models.AttentiveFP` (Xiong et al., 2020) on a ``Batch`` of
    molecules: graph attention over bonds (with their features), then ``num_timesteps`` GRU steps of
    attention from a super node to the atoms.

    Args:
        in_channels (int): atom feature size.
        hidden_channels (int): width.
        out_channels (int): targets.
        edge_dim (int): bond feature size.
        num_layers (int, optional): atom-level layers. (default: :obj:`2`)
        num_timesteps (int, optional): molecule-level steps. (default: :obj:`2`)
        dropout (float, optional): dropout. (default: :obj:`0.0`)

    Shapes:
        - **input:** a ``Batch`` with ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)`,
          ``edge_attr`` :math:`(E, D_e)`, ``batch`` :math:`(N)`
        - **output:** :math:`(B, C_{out})`
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, edge_dim: int,
                 num_layers: int = 2, num_timesteps: int = 2, dropout: float = 0.0):
        super().__init__()
        from torch_geometric.nn.models import AttentiveFP

        self.model = AttentiveFP(in_channels, hidden_channels, out_channels, edge_dim, num_layers, num_timesteps,
                                 dropout)

    def reset_parameters(self) -> None:
        self.model.reset_parameters()

    def forward(self, data) -> Tensor:
        batch, _ = graph_layout(data)
        return self.model(data.x, data.edge_index, data.edge_attr.to(data.x.dtype), batch)
