"""GraphTransformer's defaults (num_layers, num_heads, normalization, pe) and the edge_attention option of GPS."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from graphattn.nn import GraphTransformer, task_defaults


@pytest.mark.parametrize("task, layers, dropout, max_degree", [("node", 8, 0.2, 16), ("graph", 4, 0.0, None)])
def test_defaults_need_only_the_data_sizes_and_the_task_decides_four(task, layers, dropout, max_degree):
    model = GraphTransformer(7, 64, 2, task=task)
    assert model.num_layers == len(model.layers) == layers and model.layers[0].attn.num_heads == 4
    assert str(model.pattern) == "graph" and model.normalization == "sigmoid" and model.dropout == dropout
    assert model.layers[0].drop.p == model.head[2].p == dropout
    assert model.max_degree == max_degree and (model.degree_encoder is None) == (max_degree is None)
    assert GraphTransformer(7, 64, 2).task == "node"
    torch.manual_seed(0)
    explicit = GraphTransformer(7, 64, 2, task=task, num_layers=layers, dropout=dropout, max_degree=max_degree)
    torch.manual_seed(0)
    auto = GraphTransformer(7, 64, 2, task=task, num_layers="auto", dropout="auto", max_degree="auto")
    assert all(torch.equal(a, b) for a, b in zip(auto.state_dict().values(), explicit.state_dict().values()))


def test_each_task_default_can_be_overridden():
    model = GraphTransformer(7, 64, 2, num_layers=2, dropout=0.0, max_degree=None)
    assert (model.num_layers, model.dropout, model.degree_encoder) == (2, 0.0, None)
    model = GraphTransformer(7, 64, 2, task="graph", num_layers=6, dropout=0.1, max_degree=5, pe=None)
    assert (model.num_layers, model.dropout, model.max_degree, model.pe) == (6, 0.1, 5, None)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"num_layers": "eight"}, TypeError, "num_layers"), ({"num_layers": 0}, ValueError, "num_layers"),
    ({"dropout": 1.0}, ValueError, "dropout"), ({"dropout": "0.2"}, TypeError, "dropout"),
    ({"max_degree": "many"}, TypeError, "max_degree"), ({"task": "edge"}, ValueError, "task")])
def test_bad_task_defaults_are_refused_by_name(kwargs, error, name):
    with pytest.raises(error, match=name):
        GraphTransformer(7, 64, 2, **kwargs)


def test_task_defaults_replaces_only_auto():
    assert task_defaults("node", num_layers="auto", dropout=0.5, pe="auto") == {"num_layers": 8, "dropout": 0.5,
                                                                                 "pe": None}
    assert task_defaults("graph", max_degree="auto", pe="auto") == {"max_degree": None, "pe": "random_walk"}
    with pytest.raises(TypeError, match="num_heads"):
        task_defaults("node", num_heads="auto")
    with pytest.raises(TypeError, match='num_layers must be a number, None or "auto"'):
        task_defaults("graph", num_layers="deep")
    with pytest.raises(ValueError, match="pe must be one of .*auto"):
        GraphTransformer(7, 64, 2, pe="random-walk")


@pytest.mark.parametrize("pattern, expected", [
    ("graph", "sigmoid"), ("graph:0", "sigmoid"), ("khop:2", "sigmoid"), ("graph|expander:4:0", "sigmoid"),
    ("dense", "softmax"), ("gps", "softmax"), ("graph|virtual:1", "softmax"), ("graph|global:0", "softmax"),
    ("graph|dense", "softmax"), ("causal", "softmax"), ("dense&graph", "sigmoid")])
def test_default_normalization_sums_only_where_no_query_reads_the_whole_graph(pattern, expected):
    kwargs = dict(pattern="dense", local_mpnn=True) if pattern == "gps" else dict(pattern=pattern)
    m = GraphTransformer(5, 16, 1, 2, 2, **kwargs)
    assert m.normalization == expected and all(layer.attn.normalization == expected for layer in m.layers)
    assert GraphTransformer(5, 16, 1, 2, 2, **kwargs, normalization="relu").layers[1].attn.normalization == "relu"


@pytest.mark.parametrize("task, pe, expected", [
    ("node", "auto", None), ("graph", "auto", "random_walk"), ("graph", None, None), ("node", "random_walk", "random_walk"),
    ("graph", "laplacian", "laplacian")])
def test_default_pe_is_random_walk_for_graph_tasks_only(task, pe, expected):
    model = GraphTransformer(5, 16, 1, 2, 2, task=task, pe=pe)
    assert model.pe == expected and (model.pe_encoder is None) == (expected is None)
    assert GraphTransformer(5, 16, 1, 2, 2, task=task).pe == GraphTransformer(5, 16, 1, 2, 2, task=task, pe="auto").pe
    data = model.transform(Data(x=torch.randn(4, 5), edge_index=torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])))
    assert (getattr(data, "random_walk_pe", None) is not None) == (expected == "random_walk")


def test_pe_is_checked():
    with pytest.raises(ValueError, match="pe"):
        GraphTransformer(5, 16, 1, task="graph", pe="random-walk")


def molecules(seed=0):
    gen = torch.Generator().manual_seed(seed)
    ring = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 0], [1, 0, 2, 1, 3, 2, 0, 3]])
    return Batch.from_data_list([Data(x=torch.randn(4, 5, generator=gen), edge_index=ring,
                                      edge_attr=torch.randn(8, 3, generator=gen)) for _ in range(2)])


@pytest.mark.parametrize("edge_attention", [None, True])
def test_gps_edge_attention_gives_the_bonds_to_the_attention(edge_attention):
    torch.manual_seed(0)
    model = GraphTransformer(5, 16, 1, num_layers=2, num_heads=2, edge_dim=3, task="graph", pattern="dense",
                             local_mpnn=True, edge_attention=edge_attention).eval()
    for layer in model.layers:  # silence the local GINE layers: only the attention can read the bonds
        torch.nn.init.zeros_(layer.local.nn[2].weight)
        torch.nn.init.zeros_(layer.local.nn[2].bias)
    batch = molecules()
    other = batch.clone()
    other.edge_attr = torch.randn_like(other.edge_attr)
    out, out_other = model(model.transform(batch)), model(model.transform(other))
    assert torch.allclose(out, out_other) == (edge_attention is None)
    assert model.pair_features == bool(edge_attention) and model.dense_kernel == (edge_attention is None)
