r"""Training on sampled subgraphs of one large graph, and full-graph inference layer by layer.

:func:`fit_nodes` trains any node classifier that takes a ``Data`` (a
:class:`~graphattn.nn.GraphTransformer` or a baseline) on ``NeighborLoader`` subgraphs of the
training nodes and scores it on the whole graph: :func:`layerwise_inference` for a
GraphTransformer, one full-batch forward for the others. Under ``torchrun`` every epoch's
shuffled training nodes are dealt to the ranks (rank ``r`` takes every ``W``-th) and DDP averages
the gradients, so ``W`` processes with batch ``b / W`` each step as one process with batch ``b``.

Memory: a training step holds one subgraph; :func:`layerwise_inference` holds two ``[N, C]``
node states and the pairs of one chunk of queries, so its peak grows with the graph's features
and edges only (``khop:k`` is expanded chunk by chunk, never for the whole graph at once).
"""
from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphattn import distributed
from graphattn.graphs.sampling import neighbor_loader
from graphattn.nn import GraphTransformer
from graphattn.patterns.virtual import insert_virtual_keys, split_virtual, virtual_pairs
from graphattn.transforms import pair_edge_ids, pattern_pairs
from graphattn.transforms.structure import gather_edge_attr
from graphattn.utils.checks import check_int

__all__ = ["layerwise_inference", "full_graph_logits", "fit_nodes"]

log = logging.getLogger(__name__)


class _ChunkPairs:
    """Pairs (with buckets) of the pattern whose queries fall in ``[lo, hi)``, on the full graph."""

    def __init__(self, model: GraphTransformer, edge_index: Tensor, num_nodes: int):
        self.rest, self.num_virtual = split_virtual(model.pattern)
        self.max_distance = model.max_distance
        ptr = torch.tensor([0, num_nodes])
        # khop:k (k > 1): its pairs are many, so each chunk expands its own queries.
        self.expand = self.rest is not None and self.rest.expands
        if self.rest is None:
            self.pairs = torch.empty(2, 0, dtype=torch.long)
            self.buckets = torch.empty(0, dtype=torch.uint8)
        elif self.expand:
            self.layout, _ = self.rest.layouts(ptr, graph=None if self.rest.position_based else edge_index)
        else:  # patterns with O(E + N) pairs: built once, sliced per chunk
            self.pairs, self.buckets = pattern_pairs(self.rest, ptr, edge_index, self.max_distance)
            self.rowptr = torch.searchsorted(self.pairs[1], torch.arange(num_nodes + 1))

    def __call__(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        if self.expand:
            pairs, hops = self.rest.hop_pairs(self.layout, torch.arange(lo, hi))
            return pairs, hops.clamp_(max=self.max_distance + 1)
        if self.rest is None:
            return self.pairs, self.buckets
        a, b = int(self.rowptr[lo]), int(self.rowptr[hi])
        return self.pairs[:, a:b], self.buckets[a:b]


def _subproblem(pairs: Tensor, queries: Tensor, edges: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``(nodes, local pairs, local edges)``: the sorted nodes a chunk reads (its queries, their keys
    and their local edges' sources), and the pairs and edges relabelled onto them (order kept)."""
    parts = [queries, pairs[0]] + ([edges[0]] if edges is not None else [])
    nodes, inverse = torch.unique(torch.cat(parts), return_inverse=True)
    local_pairs = torch.stack([inverse[queries.numel():queries.numel() + pairs.size(1)],
                               torch.searchsorted(nodes, pairs[1])])
    local_edges = None
    if edges is not None:
        local_edges = torch.stack([inverse[queries.numel() + pairs.size(1):], torch.searchsorted(nodes, edges[1])])
    return nodes, local_pairs, local_edges


@torch.no_grad()
def layerwise_inference(model: GraphTransformer, data, chunk_size: int = 65536, progress: bool = False,
                        max_chunk_pairs: int = 1 << 22) -> Tensor:
    r"""The outputs of a node-task :class:`~graphattn.nn.GraphTransformer` on one whole graph, one
    block at a time over chunks of query nodes.

    Equal to ``model(data)`` in eval mode (tested), in memory bounded by the graph's node states
    and one chunk's pairs instead of all pairs at once. Virtual nodes attend the whole graph.

    Args:
        model (GraphTransformer): a model with ``task="node"``.
        data (Data): one graph with ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)` (and what
            the model reads: ``edge_attr``, the positional encoding).
        chunk_size (int, optional): queries per chunk. (default: :obj:`65536`)
        max_chunk_pairs (int, optional): fewer queries in a chunk whose pairs would pass this
            (the 2-hop pairs of a hub's neighbours are many). (default: :obj:`4194304`)
        progress (bool, optional): a tqdm bar over layers and chunks. (default: :obj:`False`)

    Returns:
        Tensor :math:`(N, C_{out})`.
    """
    if not isinstance(model, GraphTransformer) or model.task != "node":
        raise TypeError(f"layerwise_inference needs a node-task GraphTransformer, got {type(model).__name__}")
    chunk_size = check_int("chunk_size", chunk_size, 1)
    model.eval()
    # The model's own stages: embed (without the whole graph's pairs), each block's input and
    # virtual-node update, readout; only the block's attention runs here, chunk by chunk.
    state = model.embed(data, pairs=False)
    n, edge_index, edge_h = state.num_nodes, state.edge_index, state.edge_h
    chunk_pairs = _ChunkPairs(model, edge_index, n)
    k = chunk_pairs.num_virtual
    by_target = torch.argsort(edge_index[1], stable=True)
    edge_ptr = torch.searchsorted(edge_index[1, by_target], torch.arange(n + 1))
    bar = tqdm(total=model.num_layers * math.ceil(n / chunk_size), disable=not progress, desc="inference")
    for i, layer in enumerate(model.layers):
        h = model.block_input(state, i)
        out = torch.empty_like(h)
        lo, size = 0, chunk_size
        while lo < n:
            hi = min(n, lo + size)
            pairs, buckets = chunk_pairs(lo, hi)
            if pairs.size(1) > max_chunk_pairs and hi - lo > 1:  # hubs: fewer queries a chunk
                size = max(1, (hi - lo) * max_chunk_pairs // pairs.size(1))
                continue
            out[lo:hi] = _chunk(model, layer, h, (pairs, buckets), k, lo, hi, edge_index, by_target, edge_ptr,
                                edge_h, n)
            bar.update((hi - lo) / chunk_size)
            lo, size = hi, chunk_size
        if k:  # the virtual nodes read the whole graph
            pairs, _ = virtual_pairs(torch.tensor([0, n]), k)
            queries = pairs[:, pairs[1] >= n]
            buckets = torch.full((queries.size(1),), model.max_distance + 2, dtype=torch.long)
            attr = edge_h.new_zeros(queries.size(1), edge_h.size(1)) if model.pair_features else None
            out[n:] = layer(h, queries, attr, buckets, edge_index[:, :0], edge_h[:0] if edge_h is not None else None)[n:]
        state = model.after_block(state, i, out)
    bar.close()
    return model.readout(state)


def _chunk(model, layer, h, pairs_and_buckets, num_virtual, lo, hi, edge_index, by_target, edge_ptr, edge_h,
           n) -> Tensor:
    """One block's output for the queries ``lo .. hi - 1``."""
    pairs, buckets = pairs_and_buckets
    buckets = buckets.long()
    attr = None
    if model.pair_features:
        attr = gather_edge_attr(edge_h, pair_edge_ids(edge_index, pairs, n))
    if num_virtual:
        pairs, buckets, attr = _with_virtual_keys(pairs, buckets, attr, lo, hi, n, num_virtual, model.max_distance + 2)
    edges = edge_index[:, by_target[int(edge_ptr[lo]):int(edge_ptr[hi])]] if layer.local is not None else None
    queries = torch.arange(lo, hi)
    nodes, local_pairs, local_edges = _subproblem(pairs, queries, edges)
    edge_attr = None
    if edges is not None and edge_h is not None:
        edge_attr = edge_h[by_target[int(edge_ptr[lo]):int(edge_ptr[hi])]]
    sub = layer(h[nodes], local_pairs, attr, buckets, local_edges, edge_attr)
    return sub[torch.searchsorted(nodes, queries)]


def _with_virtual_keys(pairs, buckets, attr, lo, hi, n, k, virtual_bucket):
    """Each query ``lo .. hi - 1`` also reads the ``k`` virtual nodes (rows ``n .. n + k - 1``),
    after its real keys, with their bucket and zero features."""
    out, position = insert_virtual_keys(pairs, torch.full((hi - lo,), n), k, first_query=lo)
    new_buckets = torch.full((out.size(1),), virtual_bucket, dtype=torch.long)
    new_buckets[position] = buckets
    if attr is not None:
        attr = attr.new_zeros(out.size(1), attr.size(1)).index_copy_(0, position, attr)
    return out, new_buckets, attr


@torch.no_grad()
def full_graph_logits(model: nn.Module, data, chunk_size: int = 65536) -> Tensor:
    """Outputs on the whole graph: layer by layer for a GraphTransformer, one forward otherwise."""
    model.eval()
    if isinstance(model, GraphTransformer):
        return layerwise_inference(model, data, chunk_size)
    return model(data)


def _accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    return float((logits[mask].argmax(-1) == y[mask]).double().mean()) if bool(mask.any()) else math.nan


def fit_nodes(model: nn.Module, data, num_neighbors: Sequence[int] = (10, 5), epochs: int = 10, lr: float = 1e-3,
              batch_size: int = 512, weight_decay: float = 0.0, seed: int = 0, eval_every: int = 1,
              chunk_size: int = 65536, progress: bool = False) -> dict:
    r"""Train a node classifier on sampled subgraphs of ``data``; score it on the whole graph.

    Each epoch shuffles ``data.train_mask``'s nodes (by ``seed`` and the epoch, the same on every
    rank), deals them to the ranks, and trains on ``neighbor_loader`` subgraphs around
    ``batch_size / W`` of them a step (the model's ``transform``, if it has one, runs on each
    subgraph; its ``full_graph_transform``, if any, once on the whole graph before, so that a degree
    embedding reads true degrees), with AdamW and cross-entropy on the seed nodes. Every
    ``eval_every`` epochs the model is scored on the whole graph (:func:`full_graph_logits`); the
    test accuracy is the one at the best validation accuracy. A model with an ``epoch_hook(epoch, epochs)`` method (e.g.
    Polynormer's switch from local to global attention) is called before each epoch.

    Returns:
        ``{"val", "test", "epoch", "epoch_seconds" (median training time of an epoch),
        "eval_seconds", "params"}``.
    """
    ctx = distributed.current()
    epochs, eval_every = check_int("epochs", epochs, 1), check_int("eval_every", eval_every, 1)
    train_nodes = data.train_mask.nonzero().squeeze(1)
    transform = getattr(model, "transform", None)
    whole = getattr(model, "full_graph_transform", None)  # e.g. the true degrees, which subgraphs would undercount
    if whole is not None:
        data = whole(copy.copy(data))  # a shallow copy: the caller's graph gains no field
    trained = distributed.wrap(model, ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    best = {"val": -1.0, "test": math.nan, "epoch": 0}
    epoch_times, eval_times = [], []
    for epoch in range(1, epochs + 1):
        if hasattr(model, "epoch_hook"):
            model.epoch_hook(epoch, epochs)
        order = train_nodes[torch.randperm(train_nodes.numel(), generator=torch.Generator().manual_seed(seed + epoch))]
        mine = order[ctx.rank::ctx.world_size]
        loader = neighbor_loader(data, num_neighbors, input_nodes=mine, batch_size=max(1, batch_size // ctx.world_size),
                                 transform=transform, seed=seed * 1000 + epoch * ctx.world_size + ctx.rank)
        model.train()
        start = time.perf_counter()
        for batch in tqdm(loader, disable=not progress, desc=f"epoch {epoch}", leave=False):
            optimizer.zero_grad()
            out = trained(batch)[: batch.batch_size]
            F.cross_entropy(out, batch.y[: batch.batch_size]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        epoch_times.append(time.perf_counter() - start)
        if epoch % eval_every and epoch != epochs:
            continue
        start = time.perf_counter()
        logits = full_graph_logits(model, data, chunk_size)
        eval_times.append(time.perf_counter() - start)
        val = _accuracy(logits, data.y, data.val_mask)
        log.info("epoch %d: train %.1f s, val accuracy %.4f", epoch, epoch_times[-1], val)
        if val > best["val"]:
            best = {"val": val, "test": _accuracy(logits, data.y, data.test_mask), "epoch": epoch}
    best["epoch_seconds"] = statistics.median(epoch_times)
    best["eval_seconds"] = statistics.median(eval_times)
    best["params"] = sum(p.numel() for p in model.parameters())
    return best
