"""Positional encodings in bounded memory, against PyG's transforms."""
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE
from torch_geometric.utils import get_laplacian

from graphattn.graphs.social import social_graph
from graphattn.transforms import LaplacianPE
from graphattn.transforms.positional import RandomWalkPE


@pytest.fixture(scope="module")
def graph():
    data = social_graph(2500, avg_degree=6, seed=0)  # PyG takes its sparse path above 2,000 nodes
    data.edge_index = data.edge_index[:, 7:]  # a few nodes lose an out-edge: P is not symmetric
    return data


def test_random_walk_pe_in_blocks_equals_pyg(graph):
    expected = AddRandomWalkPE(5, attr_name="pe")(graph.clone()).pe
    got = RandomWalkPE(5, block_bytes=2 ** 18)(graph.clone()).random_walk_pe  # 13 columns a block
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_sampled_random_walk_pe_is_within_its_standard_error(graph):
    expected = AddRandomWalkPE(4, attr_name="pe")(graph.clone()).pe
    got = RandomWalkPE(4, method="sampled", num_walks=400, seed=1)(graph.clone()).random_walk_pe
    error = (got - expected).abs()
    assert float(error.max()) < 5 / (2 * 400 ** 0.5) and float(error.mean()) < 0.01
    dead_end = Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)  # 0 -> 1, and 1 has no way out
    assert RandomWalkPE(3, method="sampled")(dead_end).random_walk_pe.abs().sum() == 0


def test_random_walk_pe_refuses_work_out_of_reach_and_names_the_memory(graph):
    with pytest.raises(ValueError, match=r"multiply-adds .* GiB\). Use RandomWalkPE\(\.\.\., method='sampled'\)"):
        RandomWalkPE(16, max_work=1e6)(graph.clone())
    for kwargs, error in [({"k": 0}, ValueError), ({"k": 2, "method": "dense"}, ValueError),
                          ({"k": 2, "num_walks": 0}, ValueError)]:
        with pytest.raises(error):
            RandomWalkPE(**kwargs)


def test_laplacian_pe_from_the_sparse_solver_equals_pyg_up_to_sign(graph):
    data = graph.clone()
    data.edge_index = torch.cat([data.edge_index, data.edge_index.flip(0)], 1).unique(dim=1)
    got = LaplacianPE(4)(data.clone()).laplacian_eigenvector_pe
    expected = AddLaplacianEigenvectorPE(4, attr_name="pe", is_undirected=True)(data.clone()).pe.float()
    n = data.num_nodes
    ei, w = get_laplacian(data.edge_index, normalization="sym", num_nodes=n)
    lap = torch.sparse_coo_tensor(ei, w, (n, n)).to_dense()

    def rayleigh(v):
        return (v * (lap @ v)).sum(0) / (v * v).sum(0)

    # Eigenvectors for the same eigenvalues (vectors of a repeated eigenvalue may differ).
    torch.testing.assert_close(rayleigh(got), rayleigh(expected), atol=1e-4, rtol=0)
    residual = (lap @ got - got * rayleigh(got)).norm(dim=0) / got.norm(dim=0)
    assert float(residual.max()) < 1e-2
    torch.testing.assert_close(LaplacianPE(4)(data.clone()).laplacian_eigenvector_pe, got)  # the same every call
