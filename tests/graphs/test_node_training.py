"""Training on one large graph: neighbour sampling, sampled batches against the full-graph model,
layer-wise inference against a full forward, the training loop, and data-parallel seed splits."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from graphattn.graphs import GlobalBaseline, GNNBaseline, fit_nodes, layerwise_inference, neighbor_loader
from graphattn.graphs.sampling import TorchNeighborSampler
from graphattn.graphs.social import social_graph
from graphattn.nn import GraphTransformer
from graphattn.transforms import positional_encoding_transform


@pytest.fixture(scope="module")
def graph():
    return social_graph(240, avg_degree=6, feature_dim=8, num_classes=4, seed=1)


def test_sampler_keeps_the_requested_in_edges_without_repeats(graph):
    loader = neighbor_loader(graph, [3, 2], batch_size=50, seed=0)
    batch = next(iter(loader))
    seeds = batch.n_id[: batch.batch_size]
    assert torch.equal(seeds, torch.arange(50))
    glob = torch.stack([batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]])
    assert torch.equal(glob, graph.edge_index[:, batch.e_id])  # real edges, with their ids
    assert batch.e_id.unique().numel() == batch.e_id.numel()  # without replacement
    in_degree = torch.bincount(graph.edge_index[1], minlength=graph.num_nodes)
    kept = torch.bincount(batch.edge_index[1], minlength=batch.num_nodes)[: batch.batch_size]
    assert torch.equal(kept, in_degree[seeds].clamp(max=3))
    with pytest.raises(ValueError, match="num_neighbors"):
        TorchNeighborSampler(graph, [0])


def test_sampling_is_uniform_over_the_in_edges():
    # A star: node 0 has 10 in-edges; keeping 2 a draw, each should be kept ~ 2/10 of the time.
    star = Data(edge_index=torch.stack([torch.arange(1, 11), torch.zeros(10, dtype=torch.long)]), num_nodes=11)
    sampler = TorchNeighborSampler(star, [2], seed=0)
    from torch_geometric.sampler import NodeSamplerInput

    counts = torch.zeros(11)
    for _ in range(2000):
        out = sampler.sample_from_nodes(NodeSamplerInput(None, torch.tensor([0])))
        counts[out.node[out.row]] += 1
    assert torch.allclose(counts[1:] / 2000, torch.full((10,), 0.2), atol=0.03)


@pytest.mark.parametrize("pattern", ["graph", "graph:0"])
def test_a_batch_that_takes_every_neighbour_equals_the_full_graph_model(graph, pattern):
    torch.manual_seed(0)
    model = GraphTransformer(8, 16, 4, num_layers=2, num_heads=2, pattern=pattern, local_mpnn=True).eval()
    full = model(model.transform(graph.clone()))
    # the node defaults embed the degree: the whole graph's, as fit_nodes stores it before sampling
    whole = model.full_graph_transform(graph.clone())
    loader = neighbor_loader(whole, [-1, -1], input_nodes=torch.arange(0, 240, 7), batch_size=20,
                             transform=model.transform)
    for batch in loader:
        out = model(batch)[: batch.batch_size]
        torch.testing.assert_close(out, full[batch.n_id[: batch.batch_size]], atol=1e-5, rtol=1e-5)


def test_sampled_batches_read_the_whole_graphs_degree_without_which_they_undercount(graph):
    torch.manual_seed(0)
    model = GraphTransformer(8, 16, 4, num_layers=2, num_heads=2, max_degree=64).eval()
    expected = nx.DiGraph(graph.edge_index.t().tolist())
    whole = model.full_graph_transform(graph.clone())
    assert whole.in_degree.tolist() == [expected.in_degree(i) if i in expected else 0 for i in range(graph.num_nodes)]
    full = model(model.transform(whole.clone()))
    for source, equal in ((whole, True), (graph, False)):  # [3, 2] neighbours: the batch's own edges undercount
        batch = next(iter(neighbor_loader(source, [3, 2], batch_size=40, transform=model.transform)))
        seeds = batch.n_id[: batch.batch_size]
        same = torch.allclose(model.embed(batch).h[: batch.batch_size], model.embed(model.transform(whole.clone())).h[seeds],
                              atol=1e-6)
        assert same == equal
    assert GraphTransformer(8, 16, 4, max_degree=None).full_graph_transform is None
    assert full.shape == (graph.num_nodes, 4)


def test_a_stored_degree_must_be_one_integer_per_node(graph):
    model = GraphTransformer(8, 16, 4, num_layers=1, num_heads=2)
    data = model.transform(graph.clone())
    data.in_degree = torch.ones(graph.num_nodes)
    with pytest.raises(ValueError, match="in_degree"):
        model(data)
    data.in_degree = torch.ones(graph.num_nodes - 1, dtype=torch.long)
    with pytest.raises(ValueError, match="in_degree"):
        model(data)


CASES = [("graph", {}), ("graph", {"jk": "cat", "max_degree": 3}), ("khop:2", {}), ("graph|expander:4:0|virtual:1", {}), ("khop:2|virtual:2", {"virtual_node": True}),
         ("graph", {"local_mpnn": True, "pe": "laplacian", "pe_dim": 3}), ("dense", {"edge_dim": 2})]


@pytest.mark.parametrize("pattern,kwargs", CASES, ids=[c[0] + str(sorted(c[1])) for c in CASES])
def test_layerwise_inference_equals_the_full_forward(graph, pattern, kwargs):
    data = graph.clone()
    data.edge_attr = torch.randn(data.edge_index.size(1), 2)
    if "pe" in kwargs:
        data = positional_encoding_transform("laplacian", 3)(data)
    torch.manual_seed(0)
    model = GraphTransformer(8, 16, 4, 2, 2, pattern=pattern, max_distance=2, **kwargs).eval()
    expected = model(model.structure(data.clone()))  # the pairs only: the PE is already there
    torch.testing.assert_close(layerwise_inference(model, data, chunk_size=57), expected, atol=1e-5, rtol=1e-5)
    few = layerwise_inference(model, data, chunk_size=240, max_chunk_pairs=300)  # chunks cut by their pairs
    torch.testing.assert_close(few, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="node-task GraphTransformer"):
        layerwise_inference(GNNBaseline(8, 16, 4, 2, "sage"), data)


class _Shifted(GraphTransformer):
    """A model whose stages differ from GraphTransformer's: a helper that copies the forward
    instead of calling the stages would miss the changes."""

    def embed(self, data, pairs=True):
        state = super().embed(data, pairs)
        return state._replace(h=state.h + 0.5)

    def after_block(self, state, i, h):
        return super().after_block(state, i, 0.9 * h)

    def readout(self, state):
        return super().readout(state).flip(-1)


@pytest.mark.parametrize("pattern,kwargs", [
    ("khop:2|virtual:1", {"virtual_node": True, "pe": "random_walk", "pe_dim": 3, "edge_dim": 2}),
    ("graph", {"local_mpnn": True, "edge_dim": 2, "virtual_node": True}),
], ids=["khop-virtual-pe-edges", "gps-local-virtual-node"])
def test_layerwise_inference_reuses_the_models_stages(graph, pattern, kwargs):
    data = positional_encoding_transform("random_walk", 3)(graph.clone())
    data.edge_attr = torch.randn(data.edge_index.size(1), 2)
    for cls in (GraphTransformer, _Shifted):
        torch.manual_seed(0)
        model = cls(8, 16, 4, 3, 2, pattern=pattern, max_distance=2, **kwargs).eval()
        expected = model(model.structure(data.clone()))
        state = model.blocks(model.embed(model.structure(data.clone())))
        torch.testing.assert_close(model.readout(state), expected)  # forward is the stages' composition
        torch.testing.assert_close(layerwise_inference(model, data, chunk_size=50), expected, atol=1e-5, rtol=1e-5)
    del data.edge_attr
    with pytest.raises(ValueError, match="edge_attr"):  # embed's own checks run
        layerwise_inference(model, data)


@pytest.mark.parametrize("make,margin", [
    (lambda: GraphTransformer(8, 32, 4, 2, 4, pattern="graph|expander:4:0|virtual:1", max_distance=2), 0.1),
    (lambda: GlobalBaseline(8, 32, 4, 2, "polynormer"), 0.05),
], ids=["graphattn", "polynormer"])
def test_fit_nodes_learns_from_the_neighbourhood(make, margin):
    graph = social_graph(1000, avg_degree=8, feature_dim=8, num_classes=4, seed=1)
    torch.manual_seed(0)
    result = fit_nodes(make(), graph, num_neighbors=[5, 5], epochs=8, lr=1e-2, batch_size=100)
    assert "in_degree" not in graph  # the whole graph's degrees go on a copy
    centroids = torch.stack([graph.x[graph.train_mask & (graph.y == c)].mean(0) for c in range(4)])
    own = float((torch.cdist(graph.x, centroids).argmin(1) == graph.y)[graph.test_mask].float().mean())
    assert result["test"] > own + margin  # the features alone, by nearest class mean, do worse (0.39)
    assert result["epoch"] >= 1 and result["epoch_seconds"] > 0 and result["params"] > 0


WORKER = textwrap.dedent("""
    import json, sys, torch
    from graphattn import distributed
    from graphattn.graphs import fit_nodes, social_graph
    from graphattn.graphs import node_training
    from graphattn.nn import GraphTransformer
    torch.set_num_threads(1)
    seen = []
    real = node_training.neighbor_loader
    def recording(data, num_neighbors, input_nodes=None, **kwargs):
        seen.append(input_nodes.tolist())
        return real(data, num_neighbors, input_nodes=input_nodes, **kwargs)
    node_training.neighbor_loader = recording
    with distributed.script() as ctx:
        graph = social_graph(150, avg_degree=5, feature_dim=8, num_classes=4, seed=1)
        torch.manual_seed(0)
        model = GraphTransformer(8, 16, 4, 2, 2, pattern="graph|virtual:1")
        result = fit_nodes(model, graph, num_neighbors=[3, 3], epochs=2, batch_size=64)
        checksum = float(sum(p.double().sum() for p in model.parameters()))
        json.dump({"seen": seen, "checksum": checksum, "test": result["test"]}, open(sys.argv[1], "w"))
""")


def test_seed_nodes_are_dealt_to_the_ranks_under_torchrun(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        # stderr to a file, not a pipe: a pipe nobody reads until the end blocks a chatty process
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"rank{rank}.json")], env=env,
                                      stderr=open(tmp_path / f"rank{rank}.err", "w")))
    for rank, p in enumerate(procs):
        assert p.wait(timeout=120) == 0, (tmp_path / f"rank{rank}.err").read_text()[-2000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    train = set(social_graph(150, avg_degree=5, feature_dim=8, num_classes=4, seed=1).train_mask.nonzero()
                .squeeze(1).tolist())
    for epoch in range(2):
        a, b = (set(r["seen"][epoch]) for r in results)
        assert not a & b and a | b == train  # disjoint shares that cover the training nodes
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-12)  # DDP kept them equal
    assert results[0]["test"] == results[1]["test"]
