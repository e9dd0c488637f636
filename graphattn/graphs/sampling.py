r"""Node classification on one graph too large for full-batch attention: sampled subgraphs.

Training takes PyG's ``NeighborLoader`` subgraphs, and each subgraph is the attention pattern's
graph: ``model.transform`` (pairs, hop buckets) is the loader's ``transform``, so ``graph``,
``khop:2`` or ``graph|expander:4:0|virtual:1`` are built inside each batch. Evaluation runs the
trained model layer by layer over the full graph (:func:`layerwise_inference`), so that test
nodes see their whole neighbourhood; under ``torchrun`` the seed nodes are dealt to the ranks.

PyG's ``NeighborSampler`` needs the compiled ``pyg-lib`` or ``torch-sparse``, which have no
wheels on PyPI for every torch release; :class:`TorchNeighborSampler` samples the same
subgraphs with torch alone and serves PyG's ``NodeLoader`` where they are missing.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.loader import NeighborLoader, NodeLoader
from torch_geometric.sampler import BaseSampler, NodeSamplerInput, SamplerOutput
from torch_geometric.transforms import BaseTransform

from graphattn.utils.checks import check_int
from graphattn.utils.edges import expand_ranges

__all__ = ["TorchNeighborSampler", "neighbor_loader", "has_compiled_sampler"]


def has_compiled_sampler() -> bool:
    """Whether PyG's own ``NeighborSampler`` can run (``pyg-lib`` or ``torch-sparse`` installed)."""
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


class TorchNeighborSampler(BaseSampler):
    r"""Uniform neighbour sampling as PyG's ``NeighborSampler`` does it, in torch.

    From the seed nodes, hop by hop, each frontier node keeps ``num_neighbors[h]`` of its
    in-edges (``-1``: all of them) drawn uniformly without replacement; nodes seen for the first
    time form the next frontier. The subgraph holds the sampled edges (directed towards the seeds,
    as PyG's ``"directional"`` subgraphs), seeds first.

    Args:
        data (Data): the graph (``edge_index`` :math:`(2, E)`, ``num_nodes``).
        num_neighbors (list of int): in-edges kept per node at each hop.
        seed (int, optional): seeds the sampling generator. (default: :obj:`0`)
    """

    def __init__(self, data, num_neighbors: Sequence[int], seed: int = 0):
        if not num_neighbors or any(not isinstance(k, int) or k == 0 or k < -1 for k in num_neighbors):
            raise ValueError(f"num_neighbors must be a non-empty list of ints >= 1 or -1 (all), got {num_neighbors}")
        self.num_neighbors = list(num_neighbors)
        self.num_nodes = data.num_nodes
        src, dst = data.edge_index
        self.perm = torch.argsort(dst * max(self.num_nodes, 1) + src)  # CSC: in-edges grouped by target
        self.row = src[self.perm]
        self.colptr = torch.cat([dst.new_zeros(1), torch.bincount(dst, minlength=self.num_nodes).cumsum(0)])
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))

    def _sample_hop(self, frontier: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """``(positions in the CSC, index into frontier)`` of the kept in-edges."""
        pos = expand_ranges(self.colptr[frontier], self.colptr[frontier + 1])  # [2, sum deg]: (position, owner)
        if fanout < 0 or pos.size(1) == 0:
            return pos[0], pos[1]
        # A random key per edge; each node keeps its `fanout` smallest: uniform without replacement.
        order = torch.argsort(torch.rand(pos.size(1), generator=self.generator, dtype=torch.double) + pos[1])
        degree = self.colptr[frontier + 1] - self.colptr[frontier]
        rank = torch.arange(pos.size(1)) - (degree.cumsum(0) - degree)[pos[1, order]]  # place among its edges
        keep = order[rank < fanout]
        return pos[0, keep], pos[1, keep]

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> SamplerOutput:
        seeds = index.node
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[seeds] = torch.arange(seeds.numel())
        nodes, frontier, rows, cols, edges = [seeds], seeds, [], [], []
        count = seeds.numel()
        for fanout in self.num_neighbors:
            pos, owner = self._sample_hop(frontier, fanout)
            source = self.row[pos]
            fresh = torch.unique(source[local[source] < 0])
            local[fresh] = torch.arange(count, count + fresh.numel())
            count += fresh.numel()
            rows.append(local[source])
            cols.append(local[frontier[owner]])
            edges.append(self.perm[pos])
            nodes.append(fresh)
            frontier = fresh
        node = torch.cat(nodes)
        return SamplerOutput(node=node, row=torch.cat(rows), col=torch.cat(cols), edge=torch.cat(edges),
                             metadata=(index.input_id, index.time))

    def sample_from_edges(self, index, neg_sampling=None):  # pragma: no cover - node tasks only
        raise NotImplementedError("TorchNeighborSampler samples around nodes only")

    @property
    def edge_permutation(self) -> Optional[Tensor]:
        return None


def neighbor_loader(data, num_neighbors: Sequence[int], input_nodes: Optional[Tensor] = None, batch_size: int = 512,
                    shuffle: bool = False, transform: Optional[BaseTransform] = None, seed: int = 0, **kwargs):
    """PyG's ``NeighborLoader`` over ``data``, or PyG's ``NodeLoader`` with a
    :class:`TorchNeighborSampler` where PyG's sampler is not installed; the same batches either
    way: subgraphs whose first ``batch.batch_size`` nodes are the seeds, ``n_id`` their ids.

    ``transform`` runs on each subgraph (a model's ``model.transform``); ``seed`` fixes the order
    of the seeds (with ``shuffle``) and the sampling.
    """
    check_int("batch_size", batch_size, 1)
    generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
    if has_compiled_sampler():
        return NeighborLoader(data, num_neighbors=list(num_neighbors), input_nodes=input_nodes, batch_size=batch_size,
                              shuffle=shuffle, transform=transform, generator=generator, **kwargs)
    sampler = TorchNeighborSampler(data, num_neighbors, seed=seed)
    return NodeLoader(data, node_sampler=sampler, input_nodes=input_nodes, batch_size=batch_size, shuffle=shuffle,
                      transform=transform, generator=generator, **kwargs)
