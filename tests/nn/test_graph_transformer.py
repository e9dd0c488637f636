"""GraphTransformer: symmetries, batching, edge features, positional encodings, patterns, buckets."""
import logging
import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import coalesce, get_laplacian, to_undirected

from graphattn import patterns as P
from graphattn.graphs import BASELINES, GNNBaseline, Task, fit, rmse
from graphattn.nn import GraphTransformer
from graphattn.transforms import PE_ATTRS, LaplacianPE, pattern_edge_attr, positional_encoding_transform, shortest_path_buckets

PATTERNS = ["graph", "khop:2", "dense", "gps", P.window(1), "graph|expander:4:0|virtual:1"]
IN, EDGE = 5, 3


def random_graph(n, gen, p=0.3, edge_dim=EDGE):
    mask = torch.rand(n, n, generator=gen) < p
    ei = mask.triu(1).nonzero().t()
    ei = coalesce(to_undirected(ei, num_nodes=n), num_nodes=n)
    return Data(x=torch.randn(n, IN, generator=gen), edge_index=ei,
                edge_attr=torch.randn(ei.size(1), edge_dim, generator=gen), num_nodes=n)


def permute(data, perm):
    """The graph with node i renamed inv[i] (new node k is old node perm[k])."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    out = data.clone()
    out.x = data.x[perm]
    out.edge_index = inv[data.edge_index]
    for attr in ("laplacian_eigenvector_pe", "random_walk_pe"):
        if attr in data:
            out[attr] = data[attr][perm]
    return out


def model(pattern="graph", task="node", **kwargs):
    """A small model; ``"gps"`` names GraphGPS: dense attention beside a local GINE layer."""
    torch.manual_seed(0)
    kwargs.setdefault("edge_dim", EDGE)
    if pattern == "gps":
        pattern, kwargs["local_mpnn"] = "dense", True
    return GraphTransformer(IN, 16, 3, num_layers=2, num_heads=4, pattern=pattern, task=task, **kwargs).eval()


@pytest.fixture
def graphs():
    gen = torch.Generator().manual_seed(1)
    return [random_graph(n, gen) for n in (6, 1, 9, 4)]


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense", "gps", "khop:2|virtual:2"])
@pytest.mark.parametrize("pe", [None, "random_walk"])
def test_node_task_is_permutation_equivariant(pattern, pe):
    gen = torch.Generator().manual_seed(2)
    data = random_graph(10, gen)
    if pe:
        data = positional_encoding_transform(pe, 4)(data)
    m = model(pattern, pe=pe, pe_dim=4, virtual_node=True)
    perm = torch.randperm(10, generator=gen)
    torch.testing.assert_close(m(permute(data, perm)), m(data)[perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense", "gps", "graph|virtual:1"])
def test_graph_task_is_permutation_invariant(pattern):
    gen = torch.Generator().manual_seed(3)
    data = random_graph(8, gen)
    m = model(pattern, task="graph", virtual_node=True)
    perm = torch.randperm(8, generator=gen)
    torch.testing.assert_close(m(permute(data, perm)), m(data), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
@pytest.mark.parametrize("task", ["node", "graph"])
def test_batch_equals_each_graph_alone(graphs, pattern, task):
    m = model(pattern, task=task, virtual_node=True)
    batch = Batch.from_data_list(graphs)
    alone = torch.cat([m(g) for g in graphs])
    torch.testing.assert_close(m(batch), alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_model_transform_once_gives_the_same_output_without_a_search_in_forward(graphs, pattern, monkeypatch, caplog):
    m = model(pattern, task="node", pe="random_walk", pe_dim=3)
    prepared = Batch.from_data_list([m.transform(g.clone()) for g in graphs])
    raw = positional_encoding_transform("random_walk", 3)
    with caplog.at_level("WARNING"):
        expected = m(Batch.from_data_list([raw(g.clone()) for g in graphs]))
        m(Batch.from_data_list([raw(g.clone()) for g in graphs]))
    assert sum("model.transform" in r.message for r in caplog.records) == 1  # warned once
    import graphattn.transforms.structure as structure

    def no_search(*args, **kwargs):
        raise AssertionError("forward searched the graph")

    for name in ("hop_counts", "pattern_pairs"):
        monkeypatch.setattr(structure, name, no_search)
    for cls in (P.Pattern, P.GraphPattern):  # graph and khop expand through their own hop_pairs
        monkeypatch.setattr(cls, "hop_pairs", no_search)
    torch.testing.assert_close(m(prepared), expected)


def test_model_refuses_data_prepared_for_another_pattern(graphs):
    prepared = Batch.from_data_list([model("khop:2").transform(g.clone()) for g in graphs])
    with pytest.raises(ValueError, match="computed for"):
        model("graph")(prepared)
    no_ids = Batch.from_data_list([model("graph", edge_dim=None).transform(g.clone()) for g in graphs])
    with pytest.raises(ValueError, match="pair_edge"):
        model("graph")(no_ids)


@pytest.mark.parametrize("edge_dim", [None, EDGE], ids=["no-edge-features", "edge-features"])
def test_a_graph_whose_edges_changed_after_the_transform_is_refused(graphs, edge_dim):
    m = model("graph", edge_dim=edge_dim)
    prepared = [m.transform(g.clone()) for g in graphs]
    expected = m(Batch.from_data_list(prepared))
    for what in ("moved", "added", "reordered"):
        changed = [g.clone() for g in prepared]
        ei = changed[2].edge_index
        if what == "moved":
            ei[0, 0] = (ei[0, 0] + 1) % changed[2].num_nodes
        elif what == "added":
            changed[2].edge_index = torch.cat([ei, torch.tensor([[0], [1]])], 1)
        else:
            perm = torch.arange(ei.size(1)).roll(1)
            changed[2].edge_index = ei[:, perm]
        if changed[2].edge_attr is not None:
            changed[2].edge_attr = torch.randn(changed[2].edge_index.size(1), EDGE)
        batch = Batch.from_data_list(changed)
        if what == "reordered" and edge_dim is None:  # the pairs do not depend on the edges' order
            batch.edge_attr = Batch.from_data_list(prepared).edge_attr
            torch.testing.assert_close(m(batch), expected)
            continue
        with pytest.raises(ValueError, match=r"edge_index changed after model.transform .*graph 2"):
            m(batch)
    old = Batch.from_data_list(prepared)
    del old.pair_fingerprint
    with pytest.raises(ValueError, match="pair_fingerprint"):
        m(old)


def test_bad_data_names_the_argument(graphs):
    m = model("graph")
    g = graphs[0]
    with pytest.raises(TypeError, match=r"data\.x has dtype torch\.float64 but the model's parameters have dtype "
                                        r"torch\.float32"):
        m(g.clone().update({"x": g.x.double()}))
    assert torch.allclose(m.double()(g.clone().update({"x": g.x.double()})).float(), model("graph")(g), atol=1e-5)
    for rows, width in ((g.edge_index.size(1) + 1, EDGE), (g.edge_index.size(1) - 1, EDGE),
                        (g.edge_index.size(1), EDGE + 1), (g.edge_index.size(1), 1)):
        with pytest.raises(ValueError, match=r"data\.edge_attr must have shape \[E, edge_dim\]"):
            model("graph")(g.clone().update({"edge_attr": torch.randn(rows, width)}))
    with pytest.raises(ValueError, match=r"data\.edge_attr must have shape"):
        model("graph")(g.clone().update({"edge_attr": torch.randn(g.edge_index.size(1))}))
    bf16 = g.clone().update({"edge_attr": g.edge_attr.bfloat16()})  # edge features are cast, as documented
    torch.testing.assert_close(model("graph")(bf16), model("graph")(bf16.clone().update(
        {"edge_attr": bf16.edge_attr.float()})))
    for pe in (None, "random_walk", "laplacian"):
        for bad in (None, 3, g.x):
            with pytest.raises(TypeError, match="data must be a torch_geometric Data or Batch"):
                model("graph", pe=pe, pe_dim=3).transform(bad)


def test_virtual_nodes_reach_across_components_in_two_layers():
    x = torch.randn(4, IN)
    data = Data(x=x, edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), edge_attr=torch.randn(4, EDGE))
    changed = data.clone()
    changed.x = x.clone()
    changed.x[3] += 1.0
    for pattern, sees in (("graph", False), ("graph|virtual:1", True)):
        m = model(pattern)
        assert (not torch.allclose(m(data)[0], m(changed)[0])) == sees
    m = model("graph|virtual:2", edge_dim=None)
    out, weights = m(Batch.from_data_list([data, data]), return_attention_weights=True)
    pairs, alpha = weights[0]
    assert out.shape == (8, 3) and int(pairs.max()) == 8 + 2 * 2 - 1  # 2 graphs x 2 virtual nodes
    assert m.layers[0].spd_bias.num_embeddings == 8 + 3  # buckets 0..8, beyond, virtual


@pytest.mark.parametrize("pattern", ["graph", "dense", "gps"])
def test_edge_features_change_the_output_and_get_gradients(graphs, pattern):
    m = model(pattern).train()
    batch = Batch.from_data_list(graphs)
    out = m(batch)
    out.square().sum().backward()
    # GPS gives the edge features to its local GINE layer, and none to the attention (as GraphGPS)
    names = (("edge_encoder.weight", "layers.0.local.nn.0.weight") if pattern == "gps" else
             ("edge_encoder.weight", "layers.0.attn.lin_edge.weight", "layers.0.attn.lin_edge_value.weight"))
    if pattern == "gps":
        assert m.layers[0].attn.edge_dim is None and "pair_edge" not in m.transform(graphs[0])
    for name in names:
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    m.eval()
    other = batch.clone()
    other.edge_attr = other.edge_attr + 1.0
    assert not torch.allclose(m(batch), m(other), atol=1e-4)


def test_model_without_edge_dim_ignores_edge_attr_and_needs_none(graphs):
    m = model("dense", edge_dim=None)
    batch = Batch.from_data_list(graphs)
    no_attr = batch.clone()
    del no_attr.edge_attr
    torch.testing.assert_close(m(batch), m(no_attr))
    with pytest.raises(ValueError, match="edge_attr"):
        model("graph")(no_attr)


def test_every_pattern_of_the_grammar_is_accepted_and_a_wrong_one_refused(graphs):
    batch = Batch.from_data_list(graphs)
    for name in ("graph", "khop:1", "khop:3", "dense", "graph|window:1", "graph:0|global:0", P.dense(), P.window(2)):
        assert model(name)(batch).shape == (batch.num_nodes, 3)
    assert model("khop:2").pattern == P.khop(2)  # one grammar: the name is the pattern
    for wrong, error, match in [("grpah", ValueError, "unknown pattern 'grpah'"), ("khop", ValueError, "takes 1"),
                                ("khop:0", ValueError, "k must be an int >= 1"), ("khop:x", ValueError, "integers"),
                                ("dense:2", ValueError, "takes 0"), ("gps", ValueError, "unknown pattern 'gps'"),
                                (3, TypeError, "pattern must be a graphattn Pattern")]:
        with pytest.raises(error, match=match):
            GraphTransformer(IN, 16, 3, 2, 4, pattern=wrong)


def test_graph_pattern_equals_the_bound_graph_pattern(graphs):
    # "khop:2" follows each batch's graph; a pattern bound to the batch's graph gives the same model.
    batch = Batch.from_data_list(graphs)
    unbound = model("khop:2")
    bound = model(P.khop(2, batch.edge_index))
    torch.testing.assert_close(unbound(batch), bound(batch))


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense", "gps"])
def test_isolated_and_single_nodes_give_no_nan(pattern):
    gen = torch.Generator().manual_seed(4)
    isolated = Data(x=torch.randn(4, IN, generator=gen), edge_index=torch.tensor([[0, 1], [1, 0]]),
                    edge_attr=torch.randn(2, EDGE, generator=gen))  # nodes 2, 3 have no edge
    single = Data(x=torch.randn(1, IN, generator=gen), edge_index=torch.zeros(2, 0, dtype=torch.long),
                  edge_attr=torch.zeros(0, EDGE))
    batch = Batch.from_data_list([LaplacianPE(3)(isolated), LaplacianPE(3)(single)])
    for task in ("node", "graph"):
        m = model(pattern, task=task, pe="laplacian", pe_dim=3).train()
        out = m(batch)
        out.sum().backward()
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        m.eval()
        torch.testing.assert_close(m(batch)[-1:], m(single.clone().update(
            {"laplacian_eigenvector_pe": batch.laplacian_eigenvector_pe[-1:]})), atol=1e-5, rtol=1e-5)


def test_shortest_path_buckets_equal_networkx():
    gen = torch.Generator().manual_seed(5)
    graphs = [random_graph(n, gen, p=0.15) for n in (12, 1, 7, 15)]
    batch = Batch.from_data_list(graphs)
    pairs = P.dense().edge_index(batch.ptr)
    max_distance = 3
    buckets = shortest_path_buckets(batch.edge_index, pairs, batch.ptr, max_distance)
    g = nx.Graph()
    g.add_nodes_from(range(batch.num_nodes))
    g.add_edges_from(batch.edge_index.t().tolist())
    lengths = dict(nx.all_pairs_shortest_path_length(g))
    expected = [  # beyond max_distance hops, or unreachable: max_distance + 1
        lengths[j][i] if lengths[j].get(i, max_distance + 1) <= max_distance else max_distance + 1
        for j, i in pairs.t().tolist()
    ]
    assert buckets.tolist() == expected
    assert set(expected) == {0, 1, 2, 3, 4}  # every bucket occurs, "unreachable" included
    assert any(j in lengths and i in lengths[j] and lengths[j][i] > max_distance for j, i in pairs.t().tolist())


def test_shortest_path_buckets_follow_edge_direction():
    edge_index = torch.tensor([[1, 2], [0, 1]])  # 2 -> 1 -> 0
    pairs = P.dense().edge_index(torch.tensor([0, 3]))
    buckets = shortest_path_buckets(edge_index, pairs, torch.tensor([0, 3]), 5)
    dist = {(j, i): b for (j, i), b in zip(pairs.t().tolist(), buckets.tolist())}
    assert dist[(2, 0)] == 2 and dist[(0, 2)] == 6 and dist[(1, 0)] == 1 and dist[(0, 1)] == 6


def test_pattern_edge_attr_copies_edge_features_and_zeros_the_rest():
    edge_index = torch.tensor([[0, 1, 2], [1, 0, 1]])
    edge_attr = torch.tensor([[1.0], [2.0], [3.0]])
    pairs = P.dense().edge_index(torch.tensor([0, 3]))
    out = pattern_edge_attr(edge_index, edge_attr, pairs, 3)
    got = {(j, i): float(v) for (j, i), v in zip(pairs.t().tolist(), out.squeeze(1))}
    assert got[(0, 1)] == 1.0 and got[(1, 0)] == 2.0 and got[(2, 1)] == 3.0
    assert sum(got.values()) == 6.0


def test_shortest_path_bias_reaches_gradients_on_wide_patterns(graphs):
    m = model("dense").train()
    m(Batch.from_data_list(graphs)).square().sum().backward()
    grad = m.layers[0].spd_bias.weight.grad
    assert (grad.abs().sum(1) > 0).sum() >= 3  # self, edges and farther buckets all used


def test_virtual_node_connects_components():
    # Two components in one graph: without a virtual node (and with the "graph" pattern) the
    # first component cannot see the second.
    x = torch.randn(4, IN)
    data = Data(x=x, edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), edge_attr=torch.randn(4, EDGE))
    changed = data.clone()
    changed.x = x.clone()
    changed.x[3] += 1.0
    for virtual_node, sees in ((False, False), (True, True)):
        m = model("graph", virtual_node=virtual_node)
        assert (not torch.allclose(m(data)[0], m(changed)[0])) == sees


def test_gps_runs_a_local_layer_on_the_edges(graphs):
    m = model("gps")
    assert all(type(layer.local).__name__ == "GINEConv" for layer in m.layers)
    assert all(type(layer.local).__name__ == "GINConv" for layer in model("gps", edge_dim=None).layers)
    assert all(layer.local is None for layer in model("dense").layers)


def test_pool_and_task_options(graphs):
    batch = Batch.from_data_list(graphs)
    assert model(task="node")(batch).shape == (batch.num_nodes, 3)
    outs = {pool: model(task="graph", pool=pool)(batch) for pool in ("mean", "add", "max")}
    assert all(o.shape == (4, 3) for o in outs.values())
    assert not torch.allclose(outs["mean"], outs["add"]) and not torch.allclose(outs["mean"], outs["max"])
    for bad in ({"task": "edge"}, {"pool": "sum"}, {"pe": "sinusoidal"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GraphTransformer(IN, 16, 3, 2, 4, **bad)


@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_attention_weights_per_layer(graphs, normalization):
    batch = Batch.from_data_list(graphs)
    m = model("khop:2", normalization=normalization)
    out, weights = m(batch, return_attention_weights=True)
    torch.testing.assert_close(out, m(batch))
    assert len(weights) == 2
    for pairs, alpha in weights:
        assert alpha.shape == (pairs.size(1), 4) and bool(((alpha > 0) & (alpha <= 1)).all())
        sums = torch.zeros(batch.num_nodes, 4).index_add_(0, pairs[1], alpha)
        if normalization == "softmax":  # sigmoid's weights sum to anything up to the in-degree
            torch.testing.assert_close(sums, torch.ones_like(sums))


# --------------------------------------------------------------------------- positional encodings


def path_graph(n):
    return Data(edge_index=to_undirected(torch.stack([torch.arange(n - 1), torch.arange(1, n)])), num_nodes=n)


def test_laplacian_pe_of_a_path_graph_is_cosines():
    # PyG's transform uses the symmetric normalised Laplacian I - D^-1/2 A D^-1/2; on the path
    # graph its eigenvectors are sqrt(d_i) cos(pi k i / (n - 1)) (the random-walk Laplacian's
    # are the Chebyshev cosines cos(pi k i / (n - 1)), and D^1/2 maps one to the other).
    n, k = 12, 5
    pe = LaplacianPE(k)(path_graph(n)).laplacian_eigenvector_pe
    i = np.arange(n)
    sqrt_deg = np.sqrt(np.r_[1, np.full(n - 2, 2), 1])
    for m in range(1, k + 1):
        closed = sqrt_deg * np.cos(np.pi * m * i / (n - 1))
        cosine = abs(np.dot(closed, pe[:, m - 1].numpy())) / np.linalg.norm(closed) / np.linalg.norm(pe[:, m - 1])
        assert cosine == pytest.approx(1.0, abs=1e-5)  # equal up to sign and scale


def test_combinatorial_laplacian_of_a_path_graph_has_dct_eigenvectors():
    # L = D - A of the path graph: eigenvectors cos(pi k (i + 1/2) / n), eigenvalues 2 - 2 cos(pi k / n).
    n = 10
    ei, w = get_laplacian(path_graph(n).edge_index, normalization=None, num_nodes=n)
    lap = torch.zeros(n, n).index_put_((ei[0], ei[1]), w, accumulate=True).double()
    values, vectors = torch.linalg.eigh(lap)
    i = torch.arange(n, dtype=torch.double)
    for m in range(n):
        closed = torch.cos(math.pi * m * (i + 0.5) / n)
        assert float(values[m]) == pytest.approx(2 - 2 * math.cos(math.pi * m / n), abs=1e-9)
        assert abs(float(closed @ vectors[:, m])) / float(closed.norm()) == pytest.approx(1.0, abs=1e-9)


def test_laplacian_pe_pads_small_graphs():
    pe = LaplacianPE(4)(path_graph(3)).laplacian_eigenvector_pe
    assert pe.shape == (3, 4) and bool((pe[:, 2:] == 0).all()) and bool((pe[:, :2] != 0).any())
    single = LaplacianPE(4)(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=1))
    assert single.laplacian_eigenvector_pe.tolist() == [[0.0] * 4]


def test_random_walk_pe_is_return_probabilities():
    pe = positional_encoding_transform("random_walk", 4)(path_graph(5)).random_walk_pe
    # From the end of a path: step 1 never returns, step 2 returns with probability 1/2.
    assert pe[0, 0] == 0 and pe[0, 1] == pytest.approx(0.5)


@pytest.mark.parametrize("pe", ["laplacian", "random_walk"])
def test_model_reads_the_pe_attribute(graphs, pe, caplog):
    transform = positional_encoding_transform(pe, 3)
    batch = Batch.from_data_list([transform(g) for g in graphs])
    m = model(pe=pe, pe_dim=3)
    out = m(batch)
    shifted = batch.clone()
    shifted[PE_ATTRS[pe]] = shifted[PE_ATTRS[pe]] + 0.5
    assert not torch.allclose(out, m(shifted))
    torch.testing.assert_close(out, m(batch))  # eval: no random sign flips
    if pe == "laplacian":
        m.train()
        torch.manual_seed(0)
        outs = [m(batch) for _ in range(4)]
        assert not all(torch.allclose(outs[0], o) for o in outs[1:])  # training flips signs
    m.eval()
    plain = Batch.from_data_list(graphs)
    with caplog.at_level(logging.WARNING, logger="graphattn"):
        torch.testing.assert_close(m(plain), out, rtol=1e-5, atol=1e-6)  # computed graph by graph in forward
        m(plain)
    assert sum("positional encodings" in r.getMessage() for r in caplog.records) == 1  # warned once
    assert not hasattr(plain, PE_ATTRS[pe])  # the caller's batch is left as given


@pytest.mark.parametrize("pe", ["laplacian", "random_walk"])
def test_pe_of_a_batch_is_each_graphs_own_in_any_edge_order(graphs, pe):
    # edges shuffled across graphs, and a last graph without edges: still the per-graph transform's numbers
    from graphattn.nn.graph_inputs import positional_encoding_of_batch
    edgeless = graphs[0].subgraph(torch.tensor([0, 1]))
    edgeless.edge_index, edgeless.edge_attr = edgeless.edge_index[:, :0], edgeless.edge_attr[:0]
    parts = list(graphs) + [edgeless]
    transform = positional_encoding_transform(pe, 3)
    expected = torch.cat([transform(g.clone())[PE_ATTRS[pe]] for g in parts])
    batch = Batch.from_data_list(parts)
    batch.edge_index = batch.edge_index[:, torch.randperm(batch.edge_index.size(1), generator=torch.Generator().manual_seed(0))]
    got = positional_encoding_of_batch(batch, pe, 3, batch.batch, len(parts))
    torch.testing.assert_close(got, expected)


def test_repr():
    assert repr(model("khop:2")) == "GraphTransformer(5, 16, 3, num_layers=2, num_heads=4, pattern='khop:2', max_degree=16, task='node')"
    assert repr(model("gps")) == ("GraphTransformer(5, 16, 3, num_layers=2, num_heads=4, pattern='dense', "
                                  "local_mpnn=True, max_degree=16, task='node')")
    assert repr(model().layers[0]) == "GraphTransformerLayer(16, num_heads=4)"


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("conv", list(BASELINES))
@pytest.mark.parametrize("task", ["node", "graph"])
def test_baselines_run_on_a_batch(graphs, conv, task):
    torch.manual_seed(0)
    m = GNNBaseline(IN, 16, 3, 2, conv, edge_dim=EDGE, task=task).eval()
    batch = Batch.from_data_list(graphs)
    out = m(batch)
    assert out.shape == ((batch.num_nodes if task == "node" else 4), 3) and torch.isfinite(out).all()
    assert BASELINES[conv] in repr(m)


def test_fit_learns_a_graph_regression(graphs):
    # Target: the number of nodes; a few epochs of the shared loop must cut the error.
    data = [g.clone().update({"y": torch.tensor([[float(g.num_nodes)]])}) for g in graphs * 4]
    task = Task(select=lambda out, b: (out, b.y), loss=torch.nn.functional.mse_loss, metric=rmse,
                higher_is_better=False)
    torch.manual_seed(0)
    m = GraphTransformer(IN, 16, 1, 1, 2, edge_dim=EDGE, task="graph", pool="add")
    with torch.no_grad():
        before = rmse(torch.cat([m(g) for g in data]), torch.cat([g.y for g in data]))
    result = fit(m, data, data, data, task, epochs=30, lr=3e-3, batch_size=4)
    assert result["test"] < 0.5 * before and result["params"] > 0


def test_dropout_max_distance_and_attn_kwargs_options(graphs):
    batch = Batch.from_data_list(graphs)
    m = model("dense", dropout=0.5).train()
    assert not torch.allclose(m(batch), m(batch))  # dropout acts in training...
    m.eval()
    torch.testing.assert_close(m(batch), m(batch))  # ...and not in eval
    short = model("dense", max_distance=2)
    assert short.layers[0].spd_bias.num_embeddings == 4  # self, 1, 2 (clipped), unreachable
    sigmoid = model("graph", normalization="sigmoid")
    assert all(layer.attn.normalization == "sigmoid" for layer in sigmoid.layers)
    assert not torch.allclose(sigmoid(batch), model("graph", normalization="softmax")(batch))
    with pytest.raises(ValueError, match="normalization"):
        model("graph", attn_kwargs={"normalization": "relu"})
    with pytest.raises(ValueError, match="normalization"):
        model("graph", normalization="tanh")


@pytest.mark.parametrize("kwargs", [{"pattern": "gps"}, {"pattern": "dense", "edge_dim": None}])
def test_dense_pairs_through_the_dense_kernel_equal_the_pairs_path(graphs, kwargs):
    """Dense attention without per-pair features runs on SDPA over padded graphs; outputs,
    attention weights and gradients equal those of the same pairs through the edges backend."""
    m = model(**kwargs)
    assert m.dense_kernel
    batch = Batch.from_data_list([m.transform(g) for g in graphs])

    def run(dense_kernel):
        m.dense_kernel = dense_kernel
        m.zero_grad()
        out, weights = m(batch, return_attention_weights=True)
        out.square().sum().backward()
        return [out, *(w for _, w in weights)] + [p.grad.clone() for p in m.parameters() if p.grad is not None]

    for got, expected in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not model("graph").dense_kernel and not model("dense").dense_kernel  # pair features: the edges path


def test_degree_encoding_adds_a_vector_per_clipped_networkx_in_degree(graphs):
    data = graphs[2]
    m = model("graph", max_degree=2)
    state = m.embed(m.transform(data.clone()))
    g = nx.DiGraph(data.edge_index.t().tolist())
    g.add_nodes_from(range(data.num_nodes))
    deg = torch.tensor([min(g.in_degree(i), 2) for i in range(data.num_nodes)])
    expected = m.node_encoder(data.x) + m.degree_encoder.weight[deg]
    torch.testing.assert_close(state.h, expected)
    assert not torch.allclose(m(m.transform(data.clone())), model("graph")(model("graph").transform(data.clone())))


@pytest.mark.parametrize("jk", ["cat", "max"])
def test_jumping_knowledge_reads_every_blocks_output(graphs, jk):
    batch = Batch.from_data_list(graphs)
    m = model("graph", jk=jk, task="graph")
    state = m.embed(m.transform(batch))
    outputs = []
    h = state.h
    for layer in m.layers:
        h = layer(h, state.pairs, state.pair_attr, state.buckets, state.edge_index, state.edge_h)
        outputs.append(h)
    hidden = torch.cat(outputs, -1) if jk == "cat" else torch.stack(outputs).max(0).values
    expected = m.head(global_mean_pool(m.norm(hidden), batch.batch))
    torch.testing.assert_close(m(m.transform(batch)), expected)
    with pytest.raises(ValueError, match="all 2 blocks"):
        m.readout(state)  # a state that went through no block


@pytest.mark.parametrize("kwargs,name", [({"jk": "lstm"}, "jk"), ({"max_degree": 0}, "max_degree"),
                                         ({"max_degree": 2.5}, "max_degree")])
def test_bad_degree_and_jk_options_name_the_argument(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        GraphTransformer(IN, 16, 3, **kwargs)
