"""PyG's explainers on a whole GraphTransformer: the edge mask and the attention they report cover
the graph's edges (not the first E attention pairs), checked against the gradient's receptive field
(networkx distances), the model's own attention weights and its value projections."""
import logging

import networkx as nx
import pytest
import torch
from torch_geometric.explain import AttentionExplainer, Explainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

from graphattn.graphs.social import social_graph
from graphattn.nn import GraphTransformer

V = 5  # the explained node


@pytest.fixture(scope="module")
def graph():
    g = social_graph(80, avg_degree=3, feature_dim=8, num_classes=4, seed=1)
    g.edge_attr = torch.randn(g.edge_index.size(1), 2, generator=torch.Generator().manual_seed(0))
    return g


@pytest.fixture(autouse=True)
def quiet():
    logging.disable(logging.WARNING)  # raw data: the one-time "apply model.transform" warning
    yield
    logging.disable(logging.NOTSET)


def model(pattern, num_layers=2, **kwargs):
    torch.manual_seed(0)
    return GraphTransformer(8, 16, 4, num_layers, 2, pattern=pattern, max_distance=3, **kwargs).eval()


def hops_to(graph, target):
    """Directed hop count from every node to ``target`` (networkx)."""
    g = nx.DiGraph()
    g.add_nodes_from(range(graph.num_nodes))
    g.add_edges_from(graph.edge_index.t().tolist())
    return dict(nx.single_target_shortest_path_length(g, target))


def receptive_field(graph, target, pattern, num_layers, virtual_node=False):
    """Edges j -> i whose mask can change ``target``'s output: a masked message changes ``i``
    in some layer, and ``i`` must reach ``target`` in the layers left, ``k`` graph hops a layer
    along ``khop:k``, anything in the same graph along ``dense``; a pattern's virtual node carries
    any node's state to every node in two more layers, ``virtual_node=True``'s state in one."""
    if pattern == "dense" or ("virtual" in pattern and num_layers >= 3) or (virtual_node and num_layers >= 2):
        return torch.ones(graph.edge_index.size(1), dtype=torch.bool)
    k = int(pattern.split(":")[1]) if pattern.startswith("khop") else 1
    dist = hops_to(graph, target)
    return torch.tensor([dist.get(i, 10 ** 9) <= k * (num_layers - 1) for i in graph.edge_index[1].tolist()])


CASES = [("graph", 2, {}), ("graph", 3, {"edge_dim": 2}), ("khop:2", 2, {}), ("dense", 2, {}),
         ("graph|virtual:1", 2, {}), ("graph|virtual:1", 3, {"edge_dim": 2}), ("graph", 2, {"local_mpnn": True}),
         ("khop:2", 2, {"edge_dim": 2, "pe": "random_walk", "pe_dim": 3}),
         ("graph", 2, {"edge_dim": 2, "virtual_node": True})]
IDS = [f"{p}-L{n}-{'-'.join(sorted(k))}" for p, n, k in CASES]


def call_args(m, graph, kwargs, prepared):
    """``(x, edge_index, fields)`` of PyG's call form; ``prepared``: with model.transform's fields."""
    data = m.transform(graph.clone()) if prepared or "pe" in kwargs else graph
    names = ["edge_attr"] * ("edge_dim" in kwargs) + ["random_walk_pe"] * ("pe" in kwargs)
    if prepared:
        names += ["pair_index", "pair_bucket", "pair_spec", "pair_fingerprint"] + ["pair_edge"] * ("pair_edge" in data)
    return data.x, data.edge_index, {name: data[name] for name in names}


@pytest.mark.parametrize("prepared", [False, True], ids=["raw", "prepared"])
@pytest.mark.parametrize("pattern,num_layers,kwargs", CASES, ids=IDS)
def test_an_edge_that_cannot_reach_the_node_gets_no_gradient(graph, pattern, num_layers, kwargs, prepared):
    m = model(pattern, num_layers, **kwargs)
    x, edge_index, fields = call_args(m, graph, kwargs, prepared)
    mask = torch.zeros(edge_index.size(1), requires_grad=True)
    set_masks(m, mask, edge_index)
    m(x, edge_index, **fields)[V].sum().backward()
    clear_masks(m)
    expected = receptive_field(graph, V, pattern, num_layers, kwargs.get("virtual_node", False))
    assert 0 < int(expected.sum())
    assert torch.equal(mask.grad != 0, expected)


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense", "graph|expander:4:0|virtual:1"])
def test_an_open_mask_computes_what_the_model_does(graph, pattern):
    m = model(pattern, edge_dim=2)
    expected = m(graph)
    set_masks(m, torch.full((graph.edge_index.size(1),), 50.0), graph.edge_index)  # sigmoid(50) = 1
    assert m.explaining
    torch.testing.assert_close(m(graph.x, graph.edge_index, graph.edge_attr), expected, atol=1e-5, rtol=1e-5)
    clear_masks(m)
    assert not m.explaining


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense"])
def test_a_masked_edge_takes_away_exactly_its_own_message(graph, pattern):
    # One block: zeroing edge j -> i removes alpha_ij v_j (per head) from query i's attention sum
    # before the output projection, and changes nothing else.
    m = model(pattern, num_layers=1, edge_dim=2)
    attn = m.layers[0].attn
    seen = {}
    attn.register_forward_pre_hook(lambda mod, args: seen.__setitem__("z", args[0]))
    attn.out_proj.register_forward_pre_hook(lambda mod, args: seen.__setitem__("sum", args[0]))
    _, [(pairs, alpha)] = m(graph, return_attention_weights=True)
    full_sum, z = seen["sum"], seen["z"]
    n = graph.num_nodes
    position = {int(k): p for p, k in enumerate(pairs[1] * n + pairs[0])}
    _, (w_k, b_k), (w_v, b_v) = attn._weights()
    for e in (0, 17, 101, graph.edge_index.size(1) - 1):
        j, i = (int(v) for v in graph.edge_index[:, e])
        mask = torch.full((graph.edge_index.size(1),), 50.0)
        mask[e] = -50.0
        set_masks(m, mask, graph.edge_index)
        m(graph.x, graph.edge_index, graph.edge_attr)
        clear_masks(m)
        value = (z[j] @ w_v.t() + b_v) + attn.lin_edge_value(m.edge_encoder(graph.edge_attr[e]))
        lost = (alpha[position[i * n + j]].unsqueeze(-1) * value.view(2, 8)).reshape(16)
        expected = full_sum.clone()
        expected[i] -= lost
        torch.testing.assert_close(seen["sum"], expected, atol=1e-5, rtol=1e-5)


def model_attention(m, graph, reduce="max"):
    """The model's own attention on each graph edge, reduced over heads and then layers as
    AttentionExplainer reduces them."""
    _, weights = m(graph, return_attention_weights=True)
    n = graph.num_nodes
    wanted = graph.edge_index[1] * n + graph.edge_index[0]
    per_layer = []
    for pairs, alpha in weights:
        position = {int(k): p for p, k in enumerate(pairs[1] * n + pairs[0])}
        per_layer.append(getattr(torch, reduce)(alpha[[position[int(k)] for k in wanted]], dim=-1).values)
    return getattr(torch, reduce)(torch.stack(per_layer, -1), dim=-1).values


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense", "graph|virtual:1"])
def test_attention_explainer_reports_the_models_own_attention(graph, pattern):
    m = model(pattern)
    explainer = Explainer(model=m, algorithm=AttentionExplainer(), explanation_type="model", edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    explanation = explainer(graph.x, graph.edge_index)  # index=None: every edge, no hard mask
    expected = model_attention(m, graph)
    assert explanation.edge_mask.shape == (graph.edge_index.size(1),)
    torch.testing.assert_close(explanation.edge_mask, expected, atol=1e-6, rtol=1e-5)
    explanation = explainer(graph.x, graph.edge_index, index=V)  # PyG zeros edges beyond num_layers hops
    inside = explanation.edge_mask != 0
    assert inside.any()
    torch.testing.assert_close(explanation.edge_mask[inside], expected[inside], atol=1e-6, rtol=1e-5)


def test_gnn_explainer_masks_only_edges_in_the_receptive_field(graph):
    m = model("khop:2", edge_dim=2)
    before = m(graph)
    explainer = Explainer(model=m, algorithm=GNNExplainer(epochs=20), explanation_type="model",
                          edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    explanation = explainer(graph.x, graph.edge_index, index=V, edge_attr=graph.edge_attr)
    reach = receptive_field(graph, V, "khop:2", 2)
    assert explanation.edge_mask.shape == (graph.edge_index.size(1),)
    assert torch.equal(explanation.edge_mask != 0, reach)
    assert not m.explaining
    torch.testing.assert_close(m(graph), before)


def test_patterns_that_miss_edges_and_parallel_edges_are_refused(graph):
    for pattern in ("window:1", "graph|virtual:1"):
        m = model(pattern)
        set_masks(m, torch.zeros(graph.edge_index.size(1)), graph.edge_index)
        if pattern == "window:1":  # position pairs: most of the graph's edges are no pair
            with pytest.raises(ValueError, match="'window:1' does not attend the graph's edge"):
                m(graph.x, graph.edge_index)
        doubled = torch.cat([graph.edge_index, graph.edge_index[:, :1]], 1)
        set_masks(m, torch.zeros(doubled.size(1)), doubled)
        with pytest.raises(ValueError, match="coalesce"):
            m(graph.x, doubled)
        clear_masks(m)


def test_the_call_form_equals_the_data_form_and_refuses_mixtures(graph):
    m = model("khop:2", edge_dim=2)
    torch.testing.assert_close(m(graph.x, graph.edge_index, graph.edge_attr), m(graph))
    with pytest.raises(TypeError, match="edge_index"):
        m(graph.x)
    with pytest.raises(TypeError, match="Data/Batch alone"):
        m(graph, graph.edge_index)
    with pytest.raises(TypeError, match="data must be"):
        m([graph.x])
