"""GraphMultiheadAttention as a PyG citizen: explainers, input forms, to_hetero, Sequential."""
import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.explain import AttentionExplainer, Explainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.nn import Sequential, to_hetero
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

from graphattn import GraphMultiheadAttention
from graphattn import patterns as P

EDGES = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 2, 9]])


class Net(torch.nn.Module):
    """Two attention layers as a PyG user writes them: ``forward(x, edge_index)``."""

    def __init__(self, pattern=None, edge_dim=None):
        super().__init__()
        self.pattern = pattern
        self.a1 = GraphMultiheadAttention(8, 2, edge_dim=edge_dim, edge_value=edge_dim is not None)
        self.a2 = GraphMultiheadAttention(8, 2)
        self.lin = torch.nn.Linear(8, 3)

    def forward(self, x, edge_index, edge_attr=None):
        x = self.a1(x, edge_index, edge_attr).relu()
        x = self.a2(x, edge_index, pattern=self.pattern)
        return self.lin(x)


def inputs(seed=0):
    torch.manual_seed(seed)
    return torch.randn(10, 8), EDGES.clone()


@pytest.mark.parametrize("pattern", [None, "graph", "khop:2"])
def test_the_explained_path_computes_what_the_fast_path_does(pattern):
    x, edge_index = inputs()
    model = Net(pattern).eval()
    expected = model(x, edge_index)
    mask = torch.full((edge_index.size(1),), 50.0)  # sigmoid(50) = 1: messages pass unchanged
    set_masks(model, mask, edge_index, apply_sigmoid=True)
    assert model.a1.explaining and model.a2.explaining
    torch.testing.assert_close(model(x, edge_index), expected, atol=1e-5, rtol=1e-5)
    clear_masks(model)
    assert not model.a1.explaining


@pytest.mark.parametrize("pattern", [None, "khop:2"])
def test_the_edge_mask_changes_the_output_and_receives_gradients(pattern):
    x, edge_index = inputs()
    model = Net(pattern).eval()
    mask = torch.zeros(edge_index.size(1), requires_grad=True)
    set_masks(model, mask, edge_index, apply_sigmoid=True)
    out = model(x, edge_index)
    out[3].sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    # Edges that cannot reach node 3 within two layers get no gradient.
    assert mask.grad[4:9].abs().sum() == 0
    with torch.no_grad():
        muted = mask.detach().clone()
        muted[2] = -50.0  # edge 2 -> 3 blocked
        set_masks(model, muted, edge_index, apply_sigmoid=True)
        assert not torch.allclose(model(x, edge_index)[3], out[3])
    clear_masks(model)


def test_gnn_explainer_end_to_end():
    x, edge_index = inputs()
    model = Net("khop:2").eval()
    before = model(x, edge_index)
    explainer = Explainer(model=model, algorithm=GNNExplainer(epochs=30), explanation_type="model",
                          edge_mask_type="object", node_mask_type="attributes",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    explanation = explainer(x, edge_index, index=3)
    assert explanation.edge_mask.shape == (edge_index.size(1),)
    assert explanation.edge_mask[[0, 1, 2]].sum() > 0  # the edges on the way into node 3 matter
    assert not model.a1.explaining and not model.a2.explaining  # masks are cleared afterwards
    torch.testing.assert_close(model(x, edge_index), before)


def test_attention_explainer_reads_the_layers_attention():
    x, edge_index = inputs()
    model = Net().eval()
    collected = []
    handle = model.a1.register_message_forward_hook(lambda module, kwargs, out: collected.append(kwargs[0]["alpha"]))
    model(x, edge_index)
    handle.remove()
    _, (pairs, alpha) = model.a1(x, edge_index, return_attention_weights=True)
    assert torch.equal(pairs, edge_index)
    torch.testing.assert_close(collected[0], alpha)
    explainer = Explainer(model=model, algorithm=AttentionExplainer(), explanation_type="model", edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    explanation = explainer(x, edge_index, index=3)
    assert explanation.edge_mask.shape == (edge_index.size(1),) and explanation.edge_mask[2] > 0


def test_attention_explainer_on_a_graph_pattern_gets_the_input_edges_first():
    # khop:2 attends more pairs than the graph has edges: the explainer reads the first E of
    # them, which must be the input edges in their order.
    x, edge_index = inputs()
    layer = GraphMultiheadAttention(8, 2).eval()
    collected = []
    handle = layer.register_message_forward_hook(lambda module, kwargs, out: collected.append(kwargs[0]["alpha"]))
    out = layer(x, edge_index, pattern="khop:2")
    handle.remove()
    _, (pairs, alpha) = layer(x, edge_index, pattern="khop:2", return_attention_weights=True)
    keys = pairs[1] * 10 + pairs[0]
    position = {int(k): i for i, k in enumerate(keys)}
    first = torch.tensor([position[int(d) * 10 + int(s)] for s, d in edge_index.t()])
    torch.testing.assert_close(collected[0][:edge_index.size(1)], alpha[first])
    torch.testing.assert_close(out, layer(x, edge_index, pattern="khop:2"))


def test_explaining_with_edge_features_and_an_unknown_mask_size():
    torch.manual_seed(1)
    x, edge_index = inputs()
    edge_attr = torch.randn(edge_index.size(1), 4)
    model = Net(edge_dim=4).eval()
    expected = model(x, edge_index, edge_attr)
    set_masks(model, torch.full((edge_index.size(1),), 50.0), edge_index)
    torch.testing.assert_close(model(x, edge_index, edge_attr), expected, atol=1e-5, rtol=1e-5)
    set_masks(model, torch.zeros(edge_index.size(1) + 5), edge_index)
    with pytest.raises(ValueError, match="edge mask has 17 entries but the layer attends 12"):
        model(x, edge_index, edge_attr)
    clear_masks(model)


@pytest.mark.parametrize("form", ["EdgeIndex", "coo", "csr", "csc"])
def test_edge_index_forms_that_pyg_convs_accept(form):
    x, edge_index = inputs()
    layer = GraphMultiheadAttention(8, 2).eval()
    expected = layer(x, edge_index)
    if form == "EdgeIndex":
        given = EdgeIndex(edge_index, sparse_size=(10, 10))
    else:  # PyG's convs take the transposed adjacency: rows are the targets (queries)
        make = {"coo": to_torch_coo_tensor, "csr": to_torch_csr_tensor, "csc": to_torch_csc_tensor}[form]
        given = make(edge_index.flip(0), size=(10, 10))
    torch.testing.assert_close(layer(x, given), expected, atol=1e-6, rtol=1e-6)
    if form != "EdgeIndex":
        with pytest.raises(ValueError, match=r"shape \[N_queries, N_keys\] = \[10, 10\]"):
            layer(x, to_torch_coo_tensor(edge_index.flip(0), size=(10, 11)))


def test_to_hetero_equals_one_layer_per_edge_type():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = GraphMultiheadAttention(16, 2)
            self.lin = torch.nn.Linear(16, 4)

        def forward(self, x, edge_index):
            return self.lin(self.attn(x, edge_index).relu())

    torch.manual_seed(0)
    metadata = (["a", "b"], [("a", "to", "b"), ("b", "to", "a"), ("a", "near", "a")])
    model = to_hetero(Model(), metadata, aggr="sum")
    x = {"a": torch.randn(5, 16), "b": torch.randn(3, 16)}
    edges = {("a", "to", "b"): torch.tensor([[0, 1, 4], [0, 2, 1]]), ("b", "to", "a"): torch.tensor([[0, 2], [3, 4]]),
             ("a", "near", "a"): torch.tensor([[0, 1], [1, 0]])}
    out = model(x, edges)
    to_b = model.attn["a__to__b"]((x["a"], x["b"]), edges[("a", "to", "b")])  # bipartite: (keys, queries)
    torch.testing.assert_close(out["b"], model.lin["b"](to_b.relu()))
    to_a = model.attn["b__to__a"]((x["b"], x["a"]), edges[("b", "to", "a")]) + \
        model.attn["a__near__a"](x["a"], edges[("a", "near", "a")])
    torch.testing.assert_close(out["a"], model.lin["a"](to_a.relu()))


def test_torch_geometric_sequential():
    x, edge_index = inputs()
    first, second = GraphMultiheadAttention(8, 2), GraphMultiheadAttention(8, 2)
    model = Sequential("x, edge_index", [(first, "x, edge_index -> x"), torch.nn.ReLU(), (second, "x, edge_index -> x")])
    torch.testing.assert_close(model(x, edge_index), second(first(x, edge_index).relu(), edge_index))


def test_pattern_as_a_spec_string():
    x, _ = inputs()
    layer = GraphMultiheadAttention(8, 2).eval()
    ptr = torch.tensor([0, 4, 10])
    torch.testing.assert_close(layer(x, pattern="causal&window:2", ptr=ptr), layer(x, pattern=P.causal() & P.window(2), ptr=ptr))
