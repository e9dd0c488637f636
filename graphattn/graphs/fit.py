r"""One training loop for graph models (graphattn's and PyG's), so that examples compare models
trained the same way in one run; data-parallel under ``torchrun``."""
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

from graphattn import distributed
from graphattn.utils.checks import check_choice

__all__ = ["Task", "fit", "loader_metric", "accuracy", "balanced_accuracy", "rmse", "roc_auc", "binary_loss", "node_loss",
           "fit_full_graph"]


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
def loader_metric(model: nn.Module, loader, task: Task, ctx: Optional[distributed.Context] = None) -> float:
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
            score = loader_metric(model, val_loader, task, ctx)
            if best["val"] is None or sign * score > sign * best["val"]:
                best = {"val": score, "test": loader_metric(model, test_loader, task, ctx), "epoch": epoch}
    if val_loader is None:
        best = {"val": None, "test": loader_metric(model, test_loader, task, ctx), "epoch": epochs}
    best["seconds"] = time.perf_counter() - start
    best["params"] = sum(p.numel() for p in model.parameters())
    return best


def roc_auc(pred: Tensor, target: Tensor) -> float:
    """Area under the ROC curve of binary ``target`` by score ``pred`` (one logit a node, or two-class
    logits whose second column counts): the Mann-Whitney rank statistic, ties at their mean rank.

    A ``target`` of ``T > 1`` columns is ``T`` binary tasks scored by the columns of ``pred``
    :math:`(n, T)` (MoleculeNet's Tox21, SIDER, ...): the mean over the tasks that have both classes
    among their labelled rows, as OGB's evaluator scores them. ``NaN`` in a floating ``target``
    marks an unlabelled entry, left out.
    """
    if target.dim() == 2 and target.size(1) > 1:
        if pred.shape != target.shape:
            raise ValueError(f"roc_auc of {target.size(1)} tasks needs pred of shape {tuple(target.shape)}, "
                             f"got {tuple(pred.shape)}")
        labelled = ~target.isnan()
        both = ((target == 1) & labelled).any(0) & ((target == 0) & labelled).any(0)
        scored = [roc_auc(pred[:, t], target[:, t]) for t in both.nonzero().flatten().tolist()]
        if not scored:
            raise ValueError("roc_auc needs a task with both classes among its labelled rows, got none")
        return sum(scored) / len(scored)
    from scipy.stats import rankdata

    score = pred[:, -1] - pred[:, 0] if pred.dim() == 2 and pred.size(1) == 2 else pred.reshape(-1)
    # ranked by scipy, on the CPU: a model trained on a GPU is scored from the same code
    score, target = score.detach().cpu(), target.reshape(-1).cpu()
    if target.is_floating_point():
        labelled = ~target.isnan()
        score, target = score[labelled], target[labelled]
    target = target.bool()
    positives, negatives = int(target.sum()), int((~target).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"roc_auc needs both classes in target, got {positives} positives and {negatives} negatives")
    ranks = torch.from_numpy(rankdata(score.double().numpy()))
    return float((ranks[target].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def binary_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of logits ``pred`` against ``target`` of the same shape (one column a
    task), over the labelled entries: ``NaN`` marks a missing label (MoleculeNet's multi-task sets)."""
    labelled = ~target.isnan()
    if not bool(labelled.any()):  # a batch with no label gives no gradient, not a NaN
        return pred.sum() * 0.0
    return F.binary_cross_entropy_with_logits(pred[labelled], target[labelled])


def node_loss(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of class logits, or binary cross-entropy of one logit a node (Platonov et al.'s
    binary tasks)."""
    if out.size(-1) == 1:
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))
    return F.cross_entropy(out, y)


def fit_full_graph(
    model: nn.Module,
    data,
    split: int = 0,
    metric: Callable = accuracy,
    steps: int = 1000,
    lr: float = 3e-5,
    weight_decay: float = 0.0,
    epoch_hook: Optional[Callable] = None,
    optimizer: str = "adamw",
) -> dict:
    """Full-batch node classification on one graph, as Platonov et al. (2023) and GCN/GAT train:
    ``steps`` Adam(W) steps at a constant rate on the whole graph, evaluated after every step.
    ``optimizer="adam"`` adds ``weight_decay`` to the gradient as an L2 penalty (torch's ``Adam``),
    as Kipf & Welling and Velickovic et al. regularise on Cora; ``"adamw"`` decouples it (``AdamW``:
    each step shrinks the weights by ``lr * weight_decay``, far weaker at their 5e-4).

    ``data`` holds ``train_mask``/``val_mask``/``test_mask`` of shape ``(N,)`` or ``(N, S)`` (split
    ``split``). The test metric is the one at the step of the best validation metric. Returns
    ``{"val", "test", "step", "seconds", "step_seconds", "params"}``; ``epoch_hook(step, steps)``
    runs before each step (Polynormer's local-then-global schedule).
    """
    masks = [getattr(data, f"{part}_mask") for part in ("train", "val", "test")]
    train, val, test = (m[:, split] if m.dim() == 2 else m for m in masks)
    check_choice("optimizer", optimizer, ("adam", "adamw"))
    optimizer = (torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW)(
        model.parameters(), lr=lr, weight_decay=weight_decay)
    best = {"val": -math.inf, "test": None, "step": 0}
    start = time.perf_counter()
    for step in range(1, steps + 1):
        if epoch_hook is not None:
            epoch_hook(step, steps)
        model.train()
        optimizer.zero_grad()
        node_loss(model(data)[train], data.y[train]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(data)
        score = metric(out[val], data.y[val])
        if score > best["val"]:
            best = {"val": score, "test": metric(out[test], data.y[test]), "step": step}
    best["seconds"] = time.perf_counter() - start
    best["step_seconds"] = best["seconds"] / steps
    best["params"] = sum(p.numel() for p in model.parameters())
    return best
