r"""PyG baselines in the frame of :class:`~graphattn.graph_models.GraphTransformer`, and one
training loop for all, so that the examples compare models trained the same way in one run.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATv2Conv, GCNConv, GINConv, GINEConv, GPSConv, TransformerConv

from graphattn import distributed
from graphattn import patterns as P
from graphattn.graph_models import PE_ATTRS, POOLS, TASKS, _batch_layout, _mlp

__all__ = ["BASELINES", "GNNBaseline", "Task", "fit", "markdown_table", "balanced_accuracy", "accuracy", "rmse"]

#: the PyG layers :class:`GNNBaseline` wraps
BASELINES = {"gcn": "GCNConv", "gatv2": "GATv2Conv", "transformer": "TransformerConv", "gps": "GPSConv"}


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
        if task not in TASKS or pool not in POOLS or (pe is not None and pe not in PE_ATTRS):
            raise ValueError(f"task must be in {TASKS}, pool in {tuple(POOLS)}, pe in {tuple(PE_ATTRS)} or None")
        c = P._check_int("hidden_channels", hidden_channels, 1)
        if c % num_heads:
            raise ValueError(f"hidden_channels ({c}) must be divisible by num_heads ({num_heads})")
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, c, out_channels
        self.num_layers, self.conv, self.num_heads = P._check_int("num_layers", num_layers, 1), conv, num_heads
        self.edge_dim, self.pe, self.pe_dim, self.task, self.pool = edge_dim, pe, pe_dim, task, pool
        self.node_encoder = nn.Linear(in_channels, c)
        self.pe_encoder = nn.Linear(pe_dim, c) if pe is not None else None
        self.edge_encoder = nn.Linear(edge_dim, c) if edge_dim is not None else None
        self.convs = nn.ModuleList(self._conv(dropout) for _ in range(num_layers))
        block = conv != "gps"
        self.norms1 = nn.ModuleList(nn.LayerNorm(c) for _ in range(num_layers)) if block else None
        self.norms2 = nn.ModuleList(nn.LayerNorm(c) for _ in range(num_layers)) if block else None
        self.ffs = nn.ModuleList(_mlp(c, 2 * c, c, dropout) for _ in range(num_layers)) if block else None
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(c)
        self.head = _mlp(c, c, out_channels, dropout)
        self.reset_parameters()

    def _conv(self, dropout: float) -> nn.Module:
        c, h, edge_dim = self.hidden_channels, self.num_heads, (self.hidden_channels if self.edge_dim else None)
        if self.conv == "gcn":
            return GCNConv(c, c)
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
        batch, ptr = _batch_layout(data)
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
            z = conv(z, edge_index) if self.conv == "gcn" or e is None else conv(z, edge_index, edge_attr=e)
            h = h + self.drop(z)
            h = h + self.drop(self.ffs[i](self.norms2[i](h)))
        h = self.norm(h)
        if self.task == "graph":
            h = POOLS[self.pool](h, batch, size=num_graphs)
        return self.head(h)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, conv={BASELINES[self.conv]})")


# --------------------------------------------------------------------------- training


def accuracy(pred: Tensor, target: Tensor) -> float:
    return float((pred.argmax(-1) == target).float().mean())


def balanced_accuracy(pred: Tensor, target: Tensor) -> float:
    """Mean over classes of the per-class accuracy (PATTERN's "weighted accuracy")."""
    hits = pred.argmax(-1) == target
    return float(torch.stack([hits[target == c].float().mean() for c in target.unique()]).mean())


def rmse(pred: Tensor, target: Tensor) -> float:
    return float(F.mse_loss(pred, target).sqrt())


@dataclass
class Task:
    """What a split's batch contributes to the loss and the metric."""

    select: Callable  # (model output, batch) -> (prediction, target) of the nodes or graphs that count
    loss: Callable  # (prediction, target) -> scalar Tensor
    metric: Callable  # (all predictions, all targets) -> float
    higher_is_better: bool = True


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Task, ctx: Optional[distributed.Context] = None) -> float:
    """``task.metric`` over every batch of ``loader``; across processes, over all ranks' batches
    (each rank's loader holds its share; the metrics do not depend on the order)."""
    ctx = ctx or distributed.Context()
    model.eval()
    selected = [task.select(model(batch), batch) for batch in loader]
    # A rank with nothing to score adds empty tensors, which torch.cat skips.
    pred, target = (torch.cat(parts) for parts in zip(*selected)) if selected else (torch.empty(0), torch.empty(0))
    return task.metric(distributed.gather_tensors(pred, ctx), distributed.gather_tensors(target, ctx))


def fit(
    model: nn.Module,
    train: Sequence,
    val: Optional[Sequence],
    test: Sequence,
    task: Task,
    epochs: int = 50,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
    warmup: float = 0.05,
) -> dict:
    """Train with AdamW (linear warm-up, cosine decay, gradient clipping at 1) and report.

    The test metric is the one at the epoch of the best validation metric (the last epoch when
    ``val`` is None). Returns ``{"val", "test", "epoch", "seconds", "params"}``.

    Inside a process group (an example started by ``torchrun``, :func:`graphattn.distributed.init`)
    the model trains under ``DistributedDataParallel``: a ``DistributedSampler`` reshuffled each
    epoch gives every rank ``batch_size / W`` graphs a step, so the global batch stays
    ``batch_size``, and validation and test metrics are computed over all ranks' shares.
    """
    ctx = distributed.current()
    train, val, test = list(train), list(val) if val else None, list(test)
    if ctx.distributed:
        sampler = DistributedSampler(train, ctx.world_size, ctx.rank, shuffle=True, seed=seed)
        train_loader = DataLoader(train, batch_size=max(1, batch_size // ctx.world_size), sampler=sampler)
    else:
        sampler = None
        train_loader = DataLoader(train, batch_size=batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(seed))

    def shard(data: list) -> list:  # a rank's share; a set smaller than the group is scored whole on rank 0
        if len(data) >= ctx.world_size:
            return data[ctx.rank::ctx.world_size]
        return data if ctx.is_main else []

    val_loader = DataLoader(shard(val), batch_size=batch_size) if val else None
    test_loader = DataLoader(shard(test), batch_size=batch_size)
    trained = distributed.wrap(model, ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    total = epochs * len(train_loader)
    warm = max(1, int(warmup * total))

    def rate(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    sign = 1.0 if task.higher_is_better else -1.0
    best = {"val": None, "test": None, "epoch": 0}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for batch in train_loader:
            optimizer.zero_grad()
            loss = task.loss(*task.select(trained(batch), batch))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        if val_loader is not None:
            score = evaluate(model, val_loader, task, ctx)
            if best["val"] is None or sign * score > sign * best["val"]:
                best = {"val": score, "test": evaluate(model, test_loader, task, ctx), "epoch": epoch}
    if val_loader is None:
        best = {"val": None, "test": evaluate(model, test_loader, task, ctx), "epoch": epochs}
    best["seconds"] = time.perf_counter() - start
    best["params"] = sum(p.numel() for p in model.parameters())
    return best


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (dicts) with the given columns; floats with 3 decimals."""
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
