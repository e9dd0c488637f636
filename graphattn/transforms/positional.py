r"""Positional encodings of graph nodes as PyG transforms, applied once per data set.

Laplacian eigenvectors (PyG's ``AddLaplacianEigenvectorPE``, zero-padded for small graphs) and
random-walk return probabilities (``AddRandomWalkPE``). For a path graph the Laplacian
eigenvectors are cosines: the graph counterpart of a sequence's sinusoidal encoding.
"""
from __future__ import annotations

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE, BaseTransform

from graphattn.utils.checks import check_int

__all__ = ["PE_ATTRS", "LaplacianPE", "positional_encoding_transform"]

#: positional encodings and the ``Data`` attribute their transform adds
PE_ATTRS = {
    "laplacian": "laplacian_eigenvector_pe",  # LaplacianPE (torch_geometric's AddLaplacianEigenvectorPE)
    "random_walk": "random_walk_pe",  # torch_geometric.transforms.AddRandomWalkPE
}


class LaplacianPE(BaseTransform):
    r"""PyG's :class:`~torch_geometric.transforms.AddLaplacianEigenvectorPE`, zero-padded to ``k``.

    PyG's transform needs more than ``k`` nodes; molecules as small as methane have one. Graphs
    with ``n <= k`` nodes get their ``n - 1`` non-trivial eigenvectors of the symmetric
    normalised Laplacian and zero columns after them, so that every graph of a batch has ``k``.
    """

    def __init__(self, k: int, attr_name: str = "laplacian_eigenvector_pe"):
        self.k = check_int("k", k, 1)
        self.attr_name = attr_name

    def forward(self, data: Data) -> Data:
        n = data.num_nodes
        k = min(self.k, n - 1)
        if k >= 1:
            data = AddLaplacianEigenvectorPE(k, attr_name=self.attr_name, is_undirected=True)(data)
            pe = data[self.attr_name].float()
        else:
            pe = torch.zeros(n, 0)
        data[self.attr_name] = torch.cat([pe, pe.new_zeros(n, self.k - pe.size(1))], 1)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


def positional_encoding_transform(kind: str, dim: int) -> BaseTransform:
    """The PyG transform that adds the ``pe=kind`` encoding of :class:`GraphTransformer`.

    ``"laplacian"``: :class:`LaplacianPE` (``dim`` eigenvectors, in ``laplacian_eigenvector_pe``);
    ``"random_walk"``: :class:`~torch_geometric.transforms.AddRandomWalkPE` (``dim`` steps,
    in ``random_walk_pe``).
    """
    if kind == "laplacian":
        return LaplacianPE(dim)
    if kind == "random_walk":
        return AddRandomWalkPE(check_int("dim", dim, 1), attr_name="random_walk_pe")
    raise ValueError(f"kind must be 'laplacian' or 'random_walk', got {kind!r}")
