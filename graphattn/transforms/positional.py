r"""Positional encodings of graph nodes as PyG transforms, applied once per data set, in bounded memory.

* :class:`LaplacianPE`: eigenvectors of the symmetric normalised Laplacian for its smallest
  non-trivial eigenvalues (as PyG's ``AddLaplacianEigenvectorPE``), from a sparse eigensolver
  (ARPACK's Lanczos through :func:`scipy.sparse.linalg.eigsh`) with a loose tolerance and a fixed
  start vector: memory :math:`O(E + N k)`, and the same vectors on every call. For a path graph
  the eigenvectors are cosines: the graph counterpart of a sequence's sinusoidal encoding.
* :class:`RandomWalkPE`: the probabilities :math:`(P^t)_{ii}` that a random walk returns to its
  start after :math:`t = 1 .. k` steps (PyG's ``AddRandomWalkPE``). PyG forms the sparse powers
  :math:`P^t`, which fill in towards :math:`N^2` entries (8.7 GB at 4 steps on a 22k-node social
  graph). Here the powers act on blocks of start nodes, :math:`P^t E_B` for a block :math:`B`,
  in a fixed memory budget, and only the diagonal is kept; where even that exact computation
  would take too long, the transform refuses with the work and memory it would need, and
  ``method="sampled"`` gives the documented Monte-Carlo estimate instead.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import get_laplacian, to_scipy_sparse_matrix

from graphattn.utils.checks import check_choice, check_float, check_graph_data, check_int

__all__ = ["PE_ATTRS", "LaplacianPE", "RandomWalkPE", "positional_encoding_transform"]

log = logging.getLogger(__name__)

#: positional encodings and the ``Data`` attribute their transform adds
PE_ATTRS = {
    "laplacian": "laplacian_eigenvector_pe",  # LaplacianPE
    "random_walk": "random_walk_pe",  # RandomWalkPE
}


class LaplacianPE(BaseTransform):
    r"""Laplacian eigenvectors of each graph, zero-padded to ``k`` columns.

    The eigenvectors of :math:`L = I - D^{-1/2} A D^{-1/2}` (undirected graph) for its ``k``
    smallest eigenvalues after the first. Graphs of fewer than 100 nodes use a dense
    ``numpy.linalg.eigh``; larger ones :func:`scipy.sparse.linalg.eigsh` for the largest
    eigenvalues of :math:`2I - L` (the same vectors; Lanczos finds the top of a spectrum
    fastest) to relative tolerance ``tol``, from a fixed start vector, in :math:`O(E + N k)`
    memory. Graphs with ``n <= k`` nodes get their ``n - 1`` non-trivial eigenvectors and zero
    columns after them (methane has one node), so that every graph of a batch has ``k``.
    Eigenvectors are defined up to sign; models flip signs at random in training.

    Args:
        k (int): eigenvectors.
        attr_name (str, optional): the ``Data`` attribute. (default: :obj:`"laplacian_eigenvector_pe"`)
        tol (float, optional): eigsh's relative tolerance. (default: :obj:`1e-4`)
    """

    DENSE_BELOW = 100

    def __init__(self, k: int, attr_name: str = "laplacian_eigenvector_pe", tol: float = 1e-4):
        self.k = check_int("k", k, 1)
        self.attr_name = attr_name
        self.tol = check_float("tol", tol, 0.0, 1.0)

    def forward(self, data: Data) -> Data:
        n = check_graph_data(data).num_nodes
        k = min(self.k, n - 1)
        pe = torch.zeros(n, self.k)
        if k >= 1:
            edge_index, weight = get_laplacian(data.edge_index, normalization="sym", num_nodes=n)
            lap = to_scipy_sparse_matrix(edge_index, weight, n).tocsr()
            if n < self.DENSE_BELOW:
                values, vectors = np.linalg.eigh(lap.toarray())
            else:
                shifted = 2.0 * scipy.sparse.identity(n, format="csr") - lap
                v0 = np.random.default_rng(0).random(n) + 0.5  # fixed: the same vectors every call
                values, vectors = scipy.sparse.linalg.eigsh(shifted, k=k + 1, which="LA", tol=self.tol, v0=v0)
                values = 2.0 - values
            order = np.argsort(values)
            pe[:, :k] = torch.from_numpy(np.ascontiguousarray(vectors[:, order[1:k + 1]])).float()
        data[self.attr_name] = pe
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


class RandomWalkPE(BaseTransform):
    r"""Random-walk return probabilities :math:`(P^t)_{ii}`, :math:`t = 1 .. k`, with
    :math:`P = D^{-1} A` (a node without out-edges never returns), as PyG's ``AddRandomWalkPE``.

    ``method="exact"`` computes :math:`P^t E_B` for blocks :math:`B` of start nodes sized so that a
    dense ``[N, |B|]`` block fits ``block_bytes``: memory :math:`O(E + \text{block\_bytes})`, time
    :math:`k \cdot E \cdot N` multiply-adds in all. Beyond ``max_work`` multiply-adds it raises a
    ``ValueError`` that names that work and the memory of PyG's sparse powers (up to :math:`N^2`
    entries), instead of running for days or ending in an out-of-memory kill.
    ``method="sampled"`` estimates each probability from ``num_walks`` random walks per node (a
    Monte-Carlo estimate with standard error at most :math:`1 / (2 \sqrt{\text{num\_walks}})`,
    seeded by ``seed``) in :math:`O(N k \cdot \text{num\_walks})` time and small memory.

    Args:
        k (int): walk lengths ``1 .. k``.
        attr_name (str, optional): the ``Data`` attribute. (default: :obj:`"random_walk_pe"`)
        method (str, optional): ``"exact"`` or ``"sampled"``. (default: :obj:`"exact"`)
        num_walks (int, optional): walks per node when sampled. (default: :obj:`256`)
        max_work (float, optional): the most multiply-adds the exact method takes on. (default: :obj:`1e11`)
        block_bytes (int, optional): memory of one block of walks. (default: :obj:`2 ** 28`)
        seed (int, optional): seeds the sampled walks. (default: :obj:`0`)
    """

    def __init__(self, k: int, attr_name: str = "random_walk_pe", method: str = "exact", num_walks: int = 256,
                 max_work: float = 1e11, block_bytes: int = 2 ** 28, seed: int = 0):
        self.k = check_int("k", k, 1)
        self.attr_name = attr_name
        check_choice("method", method, ("exact", "sampled"))
        self.method = method
        self.num_walks = check_int("num_walks", num_walks, 1)
        self.max_work = check_float("max_work", max_work, 0.0, math.inf)
        self.block_bytes = check_int("block_bytes", block_bytes, 1)
        self.seed = check_int("seed", seed, 0)

    def _walk_matrix(self, data) -> scipy.sparse.csr_matrix:
        n = data.num_nodes
        src, dst = data.edge_index.numpy()
        degree = np.maximum(np.bincount(src, minlength=n), 1)
        return scipy.sparse.csr_matrix((1.0 / degree[src], (src, dst)), shape=(n, n))

    def forward(self, data: Data) -> Data:
        n, num_edges = check_graph_data(data).num_nodes, data.edge_index.size(1)
        if self.method == "sampled":
            pe = self._sampled(data)
        else:
            work = float(self.k) * max(num_edges, 1) * n
            if work > self.max_work:
                raise ValueError(
                    f"exact random-walk PE of {self.k} steps on {n:,} nodes and {num_edges:,} edges takes "
                    f"{work:.2g} multiply-adds (max_work={self.max_work:.2g}; about {work / 1e9 / 3600:.1f} h at "
                    f"1 GFlop/s) in {self.block_bytes / 2**20:.0f} MiB blocks; PyG's sparse powers of the walk "
                    f"matrix fill in towards N^2 = {float(n) ** 2:.2g} entries (up to {12 * float(n) ** 2 / 2**30:,.0f} "
                    f"GiB). Use RandomWalkPE(..., method='sampled') for a Monte-Carlo estimate, fewer steps, or "
                    f"raise max_work")
            pe = self._exact(data)
        data[self.attr_name] = pe
        return data

    def _exact(self, data) -> torch.Tensor:
        n = data.num_nodes
        walk = self._walk_matrix(data)
        out = np.zeros((n, self.k), dtype=np.float32)
        block = max(1, min(n, self.block_bytes // max(1, 8 * n)))
        for start in range(0, n, block):
            cols = np.arange(start, min(n, start + block))
            y = np.zeros((n, cols.size))
            y[cols, np.arange(cols.size)] = 1.0
            for t in range(self.k):
                y = walk @ y  # P^(t+1) E_B, [N, |B|]
                out[cols, t] = y[cols, np.arange(cols.size)]
        return torch.from_numpy(out)

    def _sampled(self, data) -> torch.Tensor:
        n = data.num_nodes
        src, dst = data.edge_index
        order = torch.argsort(src, stable=True)
        col = dst[order]
        rowptr = torch.cat([src.new_zeros(1), torch.bincount(src, minlength=n).cumsum(0)])
        degree = rowptr.diff()
        generator = torch.Generator().manual_seed(self.seed)
        out = torch.zeros(n, self.k)
        if col.numel() == 0:
            return out
        chunk = max(1, (1 << 22) // self.num_walks)
        for lo in range(0, n, chunk):
            start = torch.arange(lo, min(n, lo + chunk)).repeat_interleave(self.num_walks)
            pos, alive = start.clone(), torch.ones(start.numel(), dtype=torch.bool)
            returns = torch.zeros(start.numel(), self.k)
            for t in range(self.k):
                alive &= degree[pos] > 0  # a node without out-edges ends the walk (a zero row of P)
                step = (torch.rand(pos.numel(), generator=generator) * degree[pos]).long()
                pos = torch.where(alive, col[(rowptr[pos] + step).clamp(max=col.numel() - 1)], pos)
                returns[:, t] = alive & (pos == start)
            out[lo:lo + chunk] = returns.view(-1, self.num_walks, self.k).mean(1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, method={self.method!r})"


def positional_encoding_transform(kind: str, dim: int) -> BaseTransform:
    """The PyG transform that adds the ``pe=kind`` encoding of :class:`GraphTransformer`.

    ``"laplacian"``: :class:`LaplacianPE` (``dim`` eigenvectors, in ``laplacian_eigenvector_pe``);
    ``"random_walk"``: :class:`RandomWalkPE` (``dim`` steps, exact, in ``random_walk_pe``).
    """
    if kind == "laplacian":
        return LaplacianPE(dim)
    if kind == "random_walk":
        return RandomWalkPE(check_int("dim", dim, 1))
    raise ValueError(f"kind must be 'laplacian' or 'random_walk', got {kind!r}")
